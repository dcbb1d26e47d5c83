"""Shared fixtures: where the real recordings are, and helpers to find them."""

import os
import subprocess
import sys
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


def _himae(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "himae_stream.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def himae():
    """Run the `himae` command in a fresh interpreter, as a user would: `himae("run", ...)`."""
    return _himae


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory):
    """`random_model_file(name)`: a model file of a shipped configuration with seeded random weights
    (pipeline and CLI behaviour does not depend on what the weights learned)."""
    made: dict[str, str] = {}

    def make(name: str) -> str:
        if name not in made:
            import torch

            import training
            from training.configs import CONFIGS
            from training.model import HiMAE

            torch.manual_seed(0)
            path = tmp_path_factory.mktemp("model") / f"{name}.himae"
            training.export_model(HiMAE(CONFIGS[name]).eval(), path)
            made[name] = str(path)
        return made[name]

    return make
