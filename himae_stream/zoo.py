"""The models shipped inside the package, found by name.

`resolve("himae-100")` gives the shipped file; anything else is taken as a
path. The files live in `himae_stream/models/`; docs/models.md is their card.
"""

from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT = "himae-100"


def shipped() -> dict[str, Path]:
    """Name -> path of every model file shipped with the package."""
    return {p.stem: p for p in sorted(MODELS_DIR.glob("*.himae"))}


def resolve(name_or_path: str | os.PathLike | None = None) -> Path:
    """The model file for a shipped model's name, or the given path (default: himae-100).

    A bare name that is neither shipped nor a file raises FileNotFoundError
    listing the shipped models; a missing path is left for the loader to report.
    """
    name = os.fspath(name_or_path) if name_or_path is not None else DEFAULT
    models = shipped()
    if name in models:
        return models[name]
    path = Path(name)
    if not path.exists() and not path.suffix and len(path.parts) == 1:
        known = ", ".join(models) or "none installed"
        raise FileNotFoundError(f"no model {name!r}: not a file, nor a shipped model ({known})")
    return path
