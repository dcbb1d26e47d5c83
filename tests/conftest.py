"""Shared fixtures: where the real recordings are, and helpers to find them."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HIMAE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real recordings (../shared/data), read in place."""
    if not (DATA / "MANIFEST.md").exists():
        pytest.fail(f"real recordings not found at {DATA}; set HIMAE_DATA")
    return DATA
