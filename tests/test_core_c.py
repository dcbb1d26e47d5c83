"""The C test program (csrc/tests): sanitizers natively, NEON under qemu-aarch64 (window and stream mode,
groups of streams, probe heads)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from training import HiMAE, export_model, get_config

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
#: A guard against a hang, not a timing: the program runs in about a minute natively and a few
#: under qemu on an idle 2-core machine, and several times longer when both cores are busy.
HANG_S = 1500


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The corpus manifest and himae-25 and himae-100 model files with random weights (himae-100's deep
    levels' convs take the Winograd paths in window mode)."""
    tmp = tmp_path_factory.mktemp("ctest")
    expected = json.loads((CORPUS / "expected.json").read_text())
    manifest = tmp / "manifest.tsv"
    manifest.write_text("".join(f"{CORPUS / name}\t{v['error'] or ''}\n" for name, v in expected.items()))
    models = []
    for name in ("himae-25", "himae-100"):
        models.append(tmp / f"{name}.himae")
        export_model(HiMAE(get_config(name)).eval(), models[-1])
    return tmp, [str(manifest), str(CORPUS / "valid.himae"), str(CORPUS / "valid_encoder_only.himae"), *map(str, models)]


def _building(out: Path, *make_args: str) -> subprocess.Popen:
    """`make` of the program, started (the native and cross builds run at once, one a core)."""
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.fail("the C test program needs make and a C compiler")
    return subprocess.Popen(["make", "-s", "-C", str(REPO / "csrc" / "tests"), f"OUT={out}", *make_args])


def _built(make: subprocess.Popen) -> None:
    if make.wait(timeout=HANG_S) != 0:
        pytest.fail(f"{' '.join(make.args)} failed (its output is above)")


def _cross_tools_missing() -> str | None:
    if shutil.which(CROSS_CC) is None or shutil.which(QEMU) is None:
        return f"{CROSS_CC} and {QEMU} are needed (apt-get install gcc-aarch64-linux-gnu qemu-user libc6-dev-arm64-cross)"
    return None


@pytest.fixture(scope="module")
def runs(inputs):
    """The programs started at once (single-threaded each, over the machine's cores): natively under
    ASan/UBSan, and for AArch64 under qemu as two processes that split the checks (absent without the
    cross tools). Each test waits for its own."""
    tmp, args = inputs
    manifest, *models = args
    builds = {"native": _building(tmp / "test_core")}
    if _cross_tools_missing() is None:
        builds["aarch64"] = _building(tmp / "test_core_aarch64", f"CC={CROSS_CC}")
    for make in builds.values():
        _built(make)
    started = {"native": [subprocess.Popen([str(tmp / "test_core"), *args], stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)]}
    if "aarch64" in builds:
        emulated = [QEMU, "-L", "/usr/aarch64-linux-gnu", str(tmp / "test_core_aarch64"), manifest]
        env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}  # LeakSanitizer cannot run under qemu-user
        # himae-100 (last): window mode and the decoder only, where its Winograd convs are; its stream
        # checks under the emulator took four of the test's five minutes and run natively above.
        # himae-25's stream checks (about 90 % of the emulated time) are split into halves of about
        # equal time, one a process.
        *small, himae25, himae100 = models
        started["aarch64"] = [
            subprocess.Popen([*emulated, *small, "--window-only", himae100, "--checks", "stream,fpmode", himae25],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env),
            subprocess.Popen([*emulated, "--no-units", "--checks", "shared,group", himae25],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]
    yield started
    for processes in started.values():
        for process in processes:
            process.kill()
            process.communicate()


def _finished(processes: list[subprocess.Popen]) -> subprocess.CompletedProcess:
    """The programs' result once they end, their outputs joined (each killed after HANG_S: a guard
    against a hang); the exit status of the first that failed."""
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    failed = [r.returncode for r in results if r.returncode != 0]
    return subprocess.CompletedProcess([r.args for r in results], failed[0] if failed else 0,
                                       "".join(r.stdout for r in results), "".join(r.stderr for r in results))


def _assert_clean(result: subprocess.CompletedProcess, streamed: int = 4, windows: int = 4, programs: int = 1) -> None:
    """`streamed`: the models that got each stream check; `windows`: the models given (one given to two
    programs counts twice); `programs`: the outputs joined in `result`."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert result.stdout.count("OK (0 failures)") == programs
    assert "corpus: " in result.stdout and "conv: " in result.stdout and "gathered rows: " in result.stdout
    assert result.stdout.count("levels checked") == windows  # window mode (and the decoder) on every model given
    assert result.stdout.count("chunked runs checked") == streamed  # stream mode
    assert result.stdout.count("groups checked") == streamed  # groups of streams against separate ones
    assert result.stdout.count(", alike") == streamed  # engines sharing a workspace against ones that do not
    assert result.stdout.count("ISAs checked") == streamed  # flush to zero and the caller's mode
    rounded = [int(line.split(", ")[1].split()[0]) for line in result.stdout.splitlines() if "ISAs checked" in line]
    assert min(rounded) >= 3, result.stdout  # f32, bf16 and int8's scalar kernel, at least, rounded to nearest
    kernels = [line.split(": ")[1] for line in result.stdout.splitlines() if line.startswith("kernel: ")]
    # the probe heads on plain float loops and every f32 kernel
    assert f"heads: {1 + sum(k.startswith('f32_') for k in kernels)} kernels checked" in result.stdout
    # both Winograd forms (F(2,5) at stride 1, F(4,3) over row pairs at stride 2) on every f32 kernel
    assert f"winograd: {48 * sum(k.startswith('f32_') for k in kernels)} cases" in result.stdout
    # every kernel in both precisions (conv, wide rows, gathered rows, Winograd; stream mode on bf16 models)
    assert {k.split("_", 1)[1] for k in kernels if k.startswith("bf16_")} == {
        k.split("_", 1)[1] for k in kernels if k.startswith("f32_")}
    bf16_runs = [int(line.split(", ")[1].split()[0]) for line in result.stdout.splitlines()
                 if "chunked runs checked" in line]
    assert len(bf16_runs) == streamed and min(bf16_runs) > 0, result.stdout
    # bf16dot: the scalar statement of VDPBF16PS on every CPU, and the AVX-512 kernel where CPUID has AVX512-BF16
    assert "bf16dot_gemm_ukernel__scalar_4x8" in kernels
    dot_runs = [int(line.split(", ")[2].split()[0]) for line in result.stdout.splitlines()
                if "chunked runs checked" in line]
    assert len(dot_runs) == streamed and min(dot_runs) > 0, result.stdout
    # int8: the scalar statement everywhere, against its element-by-element reference in every conv shape, and
    # stream mode on every model (on the SIMD kernel where the CPU has AVX512-VNNI or ARM DotProd)
    assert "int8_gemm_ukernel__scalar_4x8" in kernels
    int8_runs = [int(line.split(", ")[3].split()[0]) for line in result.stdout.splitlines()
                 if "chunked runs checked" in line]
    assert len(int8_runs) == streamed and min(int8_runs) > 0, result.stdout


@pytest.mark.timeout(HANG_S + 300)
def test_c_program_under_address_and_undefined_sanitizers(runs):
    _assert_clean(_finished(runs["native"]))


@pytest.mark.timeout(HANG_S + 300)
def test_neon_kernels_under_qemu_aarch64(runs):
    if "aarch64" not in runs:
        if os.environ.get("CI"):
            pytest.fail(_cross_tools_missing())
        pytest.skip(_cross_tools_missing())
    result = _finished(runs["aarch64"])
    _assert_clean(result, streamed=3, windows=5, programs=2)
    assert "isa: best neon" in result.stdout
    assert "f32_gemm_ukernel__neon_8x8" in result.stdout
    assert "bf16dot_gemm_ukernel__neonbf16_8x8" in result.stdout  # qemu's default CPU has FEAT_BF16
    assert "int8_gemm_ukernel__neondot_8x8" in result.stdout  # and FEAT_DotProd
