"""The models shipped inside the package, found by name.

`resolve("himae-100")` gives the shipped file; anything else is taken as a
path. The files live in `himae_stream/models/`; docs/models.md is their card.
"""

from __future__ import annotations

import os
from pathlib import Path

from himae_stream.errors import ModelFileError

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT = "himae-100"


def shipped() -> dict[str, Path]:
    """Name -> path of every model file shipped with the package."""
    return {p.stem: p for p in sorted(MODELS_DIR.glob("*.himae"))}


def resolve(name_or_path: str | os.PathLike | None = None) -> Path:
    """The model file for a shipped model's name, or the given path (default: himae-100)."""
    name = os.fspath(name_or_path) if name_or_path is not None else DEFAULT
    if name in shipped():
        return shipped()[name]
    path = Path(name)
    if path.exists():
        return path
    known = ", ".join(shipped()) or "none installed"
    raise ModelFileError(f"no model file {name!r} (not a path, nor a shipped model: {known})")
