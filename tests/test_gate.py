"""The instruction-count gate: real callgrind counts, a deliberate slowdown fails, reverting passes."""

import json
import re
import shutil

import pytest

from benchmarks import gate, workload

WORKLOAD = "encode himae-25"

# A slowed variant of the workload module: one extra pass over every activation the encoder returns.
EXTRA_PASS = """
import dataclasses
import sys

import numpy as np

from benchmarks import workload


def with_extra_pass(prepare):
    def prepare_slowed(model):
        encode = prepare(model).call

        def call():
            for level in encode():
                np.tanh(level, out=level)

        return workload.Counted(call)

    return prepare_slowed


workload.WORKLOADS = tuple(
    dataclasses.replace(w, prepare=with_extra_pass(w.prepare)) if w.name == NAME else w
    for w in workload.WORKLOADS
)
sys.exit(workload.main())
""".replace("NAME", repr(WORKLOAD))


@pytest.fixture(scope="module")
def avx2():
    """Today's avx2 count of the workload, measured under callgrind."""
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is not installed (Debian: apt-get install valgrind)")
    if "avx2" not in workload.available_isas():
        pytest.skip("this CPU has no AVX2")
    counts = gate.measure("avx2", only=[WORKLOAD]).counts
    assert counts[WORKLOAD] > 10_000
    return counts


def growth_in(message: str) -> float:
    return float(re.search(r"\(\+([\d.]+)%\)", message).group(1)) / 100


def test_scalar_kernel_in_the_avx2_slot_fails(avx2):
    slowed = gate.measure("scalar", only=[WORKLOAD]).counts
    failures, _ = gate.compare({"avx2": avx2}, {"avx2": slowed})
    assert len(failures) == 1
    assert failures[0].startswith(f"{WORKLOAD} [avx2]: {avx2[WORKLOAD]:,} -> {slowed[WORKLOAD]:,} instructions")
    assert growth_in(failures[0]) == pytest.approx(slowed[WORKLOAD] / avx2[WORKLOAD] - 1, abs=1e-4)
    assert "more than the allowed +3%" in failures[0]


def test_extra_pass_fails_and_reverting_passes(avx2, tmp_path, monkeypatch):
    (tmp_path / "slowed_workload.py").write_text(EXTRA_PASS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    slowed = gate.measure("avx2", only=[WORKLOAD], module="slowed_workload").counts
    failures, _ = gate.compare({"avx2": avx2}, {"avx2": slowed})
    assert len(failures) == 1 and failures[0].startswith(f"{WORKLOAD} [avx2]:")
    assert growth_in(failures[0]) > 0.03

    reverted = gate.measure("avx2", only=[WORKLOAD]).counts
    assert reverted[WORKLOAD] == pytest.approx(avx2[WORKLOAD], rel=1e-3)  # counts repeat
    assert gate.compare({"avx2": avx2}, {"avx2": reverted})[0] == []


def test_command_line_update_then_check(avx2, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    args = ["--isa", "avx2", "--only", WORKLOAD, "--baseline", str(baseline)]
    assert gate.main([*args, "--update"]) == 0
    recorded = gate.load_baseline(baseline)
    assert recorded["counts"]["avx2"][WORKLOAD] == pytest.approx(avx2[WORKLOAD], rel=1e-3)
    assert recorded["environment"]["valgrind"].startswith("valgrind-")

    recorded["counts"]["avx2"][WORKLOAD] = int(avx2[WORKLOAD] / 1.05)  # as if today's code were 5 % slower
    baseline.write_text(json.dumps(recorded))
    assert gate.main(args) == 1
    err = capsys.readouterr().err
    assert f"gate: FAIL {WORKLOAD} [avx2]: " in err and "more than the allowed +3%" in err


def test_compare_rules():
    base = {"avx2": {"a": 1000, "b": 1000, "gone": 5}}
    failures, notes = gate.compare(base, {"avx2": {"a": 1030, "b": 1031, "new": 7}})
    assert failures == ["b [avx2]: 1,000 -> 1,031 instructions (+3.10%), more than the allowed +3%",
                        "gone [avx2]: in the baseline but not measured"]
    assert notes == ["a [avx2]: 1,000 -> 1,030 instructions (+3.00%)",
                     "new [avx2]: 7 instructions, not in the baseline (record it with --update)"]
    failures, notes = gate.compare(base, {"avx2": {"a": 900, "b": 1000, "gone": 5}})
    assert failures == []
    assert notes == ["a [avx2]: 1,000 -> 900 instructions (-10.00%): faster; record it with --update",
                     "b [avx2]: 1,000 -> 1,000 instructions (+0.00%)", "gone [avx2]: 5 -> 5 instructions (+0.00%)"]
