"""What a newcomer meets first: the README's Python example runs as written, the test
recordings ship with the repo, and running the package never writes into it."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES, REPO

import himae_stream

PACKAGE = Path(himae_stream.__file__).parent


def test_the_readme_python_example_runs_as_written(tmp_path):
    (code,) = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # 330 s give 321 ten-second windows a second apart; the last two wait on the deepest level's look-ahead
    assert "'heart_rate'" in lines[0] and lines[-1] == "319 (256,)"


def test_test_recordings_are_small_and_attributed():
    files = [p for p in FIXTURES.iterdir() if p.name != "ATTRIBUTION.md"]
    assert sum(p.stat().st_size for p in files) < 4 << 20
    attribution = (FIXTURES / "ATTRIBUTION.md").read_text()
    for path in files:
        assert f"`{path.name}`" in attribution, f"{path.name} has no attribution"


def _compiled_files(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_compiled_normaliser_is_cached_outside_the_package(tmp_path):
    """numba's default cache sits inside the installed package; files left there by a run
    outlive `pip uninstall` and shadow a later editable install. Ours go to the user's cache."""
    before = _compiled_files(PACKAGE)
    code = ("import numpy as np; from himae_stream.normalize import StreamNormalizer, default_spec, "
            "stream_kernel_entry; StreamNormalizer(default_spec(), 100.0, 1).process(np.ones((1, 50))); "
            "stream_kernel_entry()")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _compiled_files(PACKAGE) == before, "the run wrote into the package"
    cached = _compiled_files(tmp_path / "himae-stream" / "numba")
    assert any(name.endswith(".nbi") for name in cached) and any(name.endswith(".nbc") for name in cached)
