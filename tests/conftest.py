"""Shared fixtures: the real recordings the tests read, and helpers to find them.

Most tests read small cuts of openly licensed recordings shipped in
tests/data (see its ATTRIBUTION.md) and the record bundled with the
package, so the suite runs on a clone with nothing beside it. A few need
the whole corpus (TROIKA's labels, reproducing the shipped reports): they
ask for `data_dir`, which skips them with one line where the corpus is absent.
"""

import contextlib
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

# a helper module's failed assert says what it compared, as a test's does
pytest.register_assert_rewrite("commanded")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HIMAE_DATA", REPO.parent / "shared" / "data"))
FIXTURES = REPO / "tests" / "data"
#: finger PPG (PLETH) with ECG, 250 Hz, 330 s: the record the package bundles for its demo
BUNDLED = REPO / "himae_stream" / "data" / "a103l.hea"
#: finger PPG (PLETH) with missing samples, ECG, respiration: 250 Hz, 300 s
V102S = FIXTURES / "v102s.hea"
#: two ECG leads and no PPG, 360 Hz, 60 s
ECG_ONLY = FIXTURES / "100.hea"
#: wrist PPG during exercise with chest ECG and wrist accelerometer, 256 Hz, 120 s each
WRIST_RUN = FIXTURES / "wrist_s3_run.npz"
WRIST_WALK = FIXTURES / "wrist_s6_walk.npz"
WRIST_BIKE = FIXTURES / "wrist_s5_low_resistance_bike.npz"

# Lab Streaming Layer, in this process and the commands it starts: loopback only (tests/lsl_api.cfg).
os.environ["LSLAPICFG"] = str(REPO / "tests" / "lsl_api.cfg")


def pytest_collection_modifyitems(items):
    """Property tests get a deadline of their own: a generated input that makes code
    loop for ever fails its test in two minutes instead of stalling the run."""
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(120))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The whole corpus of real recordings (../shared/data or $HIMAE_DATA), read in place."""
    if not (DATA / "MANIFEST.md").exists():
        pytest.skip(f"needs the full recordings corpus: none at {DATA} (put it at ../shared/data or set HIMAE_DATA)")
    return DATA


def _himae(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "himae_stream.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


class BleSim(typing.NamedTuple):
    hci: str  # the controller's transport, `tcp-client:127.0.0.1:PORT`
    source: str  # the source URL the simulator prints for `himae run --source`


def announced(sim: subprocess.Popen) -> BleSim:
    """What a `himae sim` BLE process prints: its HCI transport, then the URL that reads it."""
    hci = None
    for line in sim.stdout:
        if hci is None and "tcp-client:127.0.0.1:" in line:
            hci = line.strip().split("=", 1)[-1]
        elif hci is not None and line.startswith("source: "):
            return BleSim(hci, line.strip().partition(" ")[2])
    pytest.fail("the simulator did not announce its HCI transport and source URL")


@contextlib.contextmanager
def ble_sim(*args: str):
    """`himae sim ARGS` (a BLE device) in its own process; yields its HCI transport and source URL."""
    sim = subprocess.Popen([sys.executable, "-m", "himae_stream.cli", "sim", *args],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield announced(sim)
    finally:
        sim.kill()
        sim.wait()


@pytest.fixture(scope="session")
def himae():
    """Run the `himae` command in a fresh interpreter, as a user would: `himae("run", ...)`."""
    return _himae


def embed_each(himae, model: str, *paths) -> list:
    """`himae embed PATH` of each path alone, with `model`: the arrays of each output file."""
    out = []
    for path in paths:
        target = path.with_name(path.name + ".emb.npz")
        result = himae("embed", str(path), "-o", str(target), "--model", model)
        assert result.returncode == 0, result.stderr
        with np.load(target) as z:
            out.append(dict(z))
    return out


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
