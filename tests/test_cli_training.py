"""`himae train`, `himae export`, `himae info` as a user runs them, bad input included."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, WRIST_RUN

from himae_stream import modelfile
from training import get_config

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"


def himae(*args, cwd=REPO, timeout=600, python_args=()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *python_args, "-m", "himae_stream.cli", *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_train_export_info_on_real_recordings(tmp_path):
    """The README's 20-step run: trains on CPU, its checkpoint exports and reads back."""
    run = himae("train", "--config", "himae-25", "--data", FIXTURES, "--epochs", "2", "--window-stride", "10",
                "--max-steps", "20", "--device", "cpu", "--out", tmp_path / "run")
    assert run.returncode == 0, run.stderr
    assert "trained 20 steps" in run.stdout
    assert "loss" in run.stderr and "samples/s" in run.stderr
    model_path = tmp_path / "m.himae"
    exp = himae("export", tmp_path / "run" / "best.pt", "-o", model_path)
    assert exp.returncode == 0, exp.stderr
    f = modelfile.read(model_path)
    assert f.config == get_config("himae-25")
    assert f.meta["provenance"]["steps"] == 20
    assert all(np.isfinite(t).all() for t in f.tensors.values())
    info = himae("info", model_path)
    assert info.returncode == 0, info.stderr
    assert "himae-25" in info.stdout and "checksums" in info.stdout and "encoder.3.conv2.weight" in info.stdout
    assert f"{sum(t.size for t in f.tensors.values()):,}" in info.stdout


def test_missing_data_path(tmp_path):
    one_line_error(himae("train", "--config", "himae-25", "--data", tmp_path / "nowhere", "--out", tmp_path),
                   "data path not found")


def test_unreadable_recording(tmp_path):
    bad = tmp_path / "broken.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, not really" + bytes(100))
    one_line_error(himae("train", "--config", "himae-25", "--data", bad, "--out", tmp_path / "o"),
                   "cannot read recording", "broken.mat")


def test_wrong_channel_name(tmp_path):
    one_line_error(himae("train", "--config", "himae-25", "--data", WRIST_RUN, "--channels", "PLETH",
                         "--out", tmp_path), "no channel matches 'PLETH'", "PPG")


def test_window_longer_than_recording(tmp_path):
    short = tmp_path / "short.npz"
    np.savez(short, signals=np.random.default_rng(0).standard_normal((1, 900)), fs=100.0,
             channel_names=np.array(["PPG"]))
    one_line_error(himae("train", "--config", "himae-100", "--data", short, "--out", tmp_path / "o"),
                   "longer than the recording")


def test_train_and_export_without_torch_say_what_to_install(tmp_path):
    block_torch = ["-c", "import sys, runpy; sys.modules['torch'] = None; "
                         "runpy.run_module('himae_stream.cli', run_name='__main__')"]
    for args in (["train", "--data", tmp_path], ["export", tmp_path / "x.pt", "-o", tmp_path / "x.himae"]):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run([sys.executable, *block_torch, *map(str, args)], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120)
        one_line_error(result, "pip install 'himae-stream[train]'")


def test_export_refuses_what_is_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    one_line_error(himae("export", junk, "-o", tmp_path / "x.himae"), "is not a HiMAE checkpoint")
    one_line_error(himae("export", tmp_path / "none.pt", "-o", tmp_path / "x.himae"), "checkpoint not found")


@pytest.mark.parametrize("name", ["nan_weight.himae", "truncated_in_data.himae", "bad_magic.himae"])
def test_info_names_the_problem_of_a_broken_file(name):
    import json

    expected = json.loads((CORPUS / "expected.json").read_text())[name]["error"]
    one_line_error(himae("info", CORPUS / name), expected)
