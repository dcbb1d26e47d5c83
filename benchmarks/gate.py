"""Deterministic latency gate: instruction counts of a fixed workload under callgrind.

Wall-clock timings on a shared 2-core machine are noise; instruction counts
are not: the same code on the same input executes the same instructions,
run after run. `python -m benchmarks.gate` counts each workload of
benchmarks/workload.py (one window encode per configuration, 10 s of
stream-mode pushes, the prepared live push that completes a deepest-level
position, one reconstruct, a 1-s push into each of 16 streams pushed together) for every ISA variant this CPU has and
valgrind can execute, compares with benchmarks/gate_baseline.json, and fails
if any count grew by more than 3 %. `--update` rewrites the baseline on
purpose, so the change shows in review.

valgrind does not execute AVX-512 (it hides it from CPUID), so the avx512
kernels are not gated; scalar and avx2 (and neon on ARM) are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import workload

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "gate_baseline.json"
MARKER_SOURCE = HERE / "gate_marker.c"
THRESHOLD = 0.03
# Threads that spin while idle would make counts depend on scheduling.
SINGLE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "NUMBA_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


class GateError(Exception):
    """The gate could not measure (no valgrind, no compiler, a workload crashed)."""


@dataclass
class Measurement:
    """Instructions per workload for one ISA, or `unavailable` when valgrind cannot run that ISA."""

    counts: dict[str, int] = field(default_factory=dict)
    unavailable: bool = False


def environment() -> dict[str, str]:
    """What the counts depend on besides the code: a different value explains a shifted baseline."""
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    import numpy

    return {"valgrind": valgrind, "python": platform.python_version(), "numpy": numpy.__version__,
            "machine": platform.machine()}


def build_marker(cache: Path = workload.CACHE) -> Path:
    """Compile gate_marker.c once (again when it changes) into `cache`."""
    library = cache / "gate_marker.so"
    if library.exists() and library.stat().st_mtime >= MARKER_SOURCE.stat().st_mtime:
        return library
    compiler = os.environ.get("CC", "cc")
    cache.mkdir(parents=True, exist_ok=True)
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", str(MARKER_SOURCE), "-o", str(partial)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise GateError(f"cannot build {MARKER_SOURCE.name} (needs a C compiler and valgrind's headers):\n"
                        f"{done.stderr.strip()}")
    partial.replace(library)
    return library


def prepare(cache: Path = workload.CACHE) -> Path:
    """Check for valgrind, write the model files and build the marker library; its path."""
    if shutil.which("valgrind") is None:
        raise GateError("valgrind is not installed (Debian: apt-get install valgrind)")
    for name in workload.CONFIG_NAMES:
        workload.model_path(name, cache)
    return build_marker(cache)


def measure(isa: str, only: list[str] | None = None, cache: Path = workload.CACHE,
            module: str = "benchmarks.workload") -> Measurement:
    """Count the workloads with the kernels forced to `isa`, in one process under callgrind.

    `module` runs the workloads (benchmarks.workload's command line); a variant
    module that wraps it is how a deliberately slowed workload is counted.
    """
    marker = prepare(cache)
    with tempfile.TemporaryDirectory(prefix="himae-gate-") as out:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
                   f"--callgrind-out-file={out}/callgrind.out",
                   sys.executable, "-m", module,
                   "--models", str(cache), "--isa", isa, "--marker", str(marker)]
        if only:
            command += ["--only", *only]
        env = {**os.environ, **SINGLE_THREAD}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE.parent)
        if done.returncode != 0:
            raise GateError(f"the {isa} workload failed under valgrind:\n{done.stderr.strip()[-3000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        return Measurement(read_dumps(Path(out)), report["unavailable"])


def read_dumps(folder: Path) -> dict[str, int]:
    """Instructions per named dump: callgrind writes one file per CALLGRIND_DUMP_STATS_AT."""
    counts = {}
    for dump in folder.glob("callgrind.out.*"):
        text = dump.read_text()
        name = re.search(r"^desc: Trigger: Client Request: (.+)$", text, re.M)
        total = re.search(r"^summary: (\d+)$", text, re.M)
        if name and total:
            counts[name.group(1)] = int(total.group(1))
    return counts


def compare(baseline: dict[str, dict[str, int]], measured: dict[str, dict[str, int]],
            threshold: float = THRESHOLD) -> tuple[list[str], list[str]]:
    """(failures, notes) of `measured` against `baseline`, both {isa: {workload: instructions}}.

    A count more than `threshold` above its baseline fails; so does a
    baseline workload that was not measured for an ISA that was. Every
    other count is a note with its change; new workloads and large
    improvements say to record them with --update.
    """
    failures, notes = [], []
    for isa, counts in sorted(measured.items()):
        base = baseline.get(isa, {})
        for name, count in sorted(counts.items()):
            label = f"{name} [{isa}]"
            if name not in base:
                notes.append(f"{label}: {count:,} instructions, not in the baseline (record it with --update)")
                continue
            growth = round(count / base[name] - 1.0, 9)  # exactly +3.00 % is allowed
            line = f"{label}: {base[name]:,} -> {count:,} instructions ({growth:+.2%})"
            if growth > threshold:
                failures.append(f"{line}, more than the allowed +{threshold:.0%}")
            elif growth < -threshold:
                notes.append(f"{line}: faster; record it with --update")
            else:
                notes.append(line)
        for name in sorted(set(base) - set(counts)):
            failures.append(f"{name} [{isa}]: in the baseline but not measured")
    return failures, notes


def load_baseline(path: Path) -> dict:
    """{"environment": {...}, "counts": {isa: {workload: instructions}}} as recorded by --update."""
    return json.loads(path.read_text())


def measure_all(isas: list[str], only: list[str] | None) -> dict[str, dict[str, int]]:
    """{isa: counts} for every requested ISA this build can run under valgrind; says what it leaves out."""
    available = workload.available_isas()
    if not available:
        raise GateError("the C core is not built (himae_stream.model cannot be imported)")
    for isa in sorted(set(isas or available) - set(available)):
        print(f"gate: {isa}: not available on this CPU or build; not gated")
    wanted = [isa for isa in available if not isas or isa in isas]
    prepare()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # one valgrind process per ISA
        results = pool.map(lambda isa: measure(isa, only), wanted)
    measured = {}
    for isa, result in zip(wanted, results):
        if result.unavailable:
            print(f"gate: {isa}: this CPU has it but valgrind cannot execute it; not gated")
            continue
        measured[isa] = result.counts
    return measured


def update(path: Path, measured: dict[str, dict[str, int]], partial: bool) -> None:
    """Record `measured` in the baseline; a `partial` run (--only) keeps the other workloads' counts."""
    counts = load_baseline(path)["counts"] if path.exists() else {}
    for isa, values in measured.items():
        counts[isa] = {**counts.get(isa, {}), **values} if partial else values
        for name, count in sorted(values.items()):
            print(f"gate: {name} [{isa}]: {count:,} instructions recorded")
    path.write_text(json.dumps({"environment": environment(), "counts": counts}, indent=2, sort_keys=True) + "\n")


def check(path: Path, measured: dict[str, dict[str, int]], only: list[str] | None, threshold: float) -> int:
    """Compare with the baseline at `path`, print the outcome; the exit status."""
    baseline = load_baseline(path)
    gated = {isa: {k: v for k, v in baseline["counts"].get(isa, {}).items() if not only or k in only}
             for isa in measured}
    failures, notes = compare(gated, measured, threshold)
    for line in notes:
        print(f"gate: {line}")
    if failures:
        env = environment()
        changed = {k: (baseline["environment"].get(k), v) for k, v in env.items()
                   if baseline["environment"].get(k) != v}
        for line in failures:
            print(f"gate: FAIL {line}", file=sys.stderr)
        if changed:
            print(f"gate: the baseline was recorded elsewhere (recorded, now): {changed}", file=sys.stderr)
        return 1
    total = sum(len(v) for v in measured.values())
    print(f"gate: ok, {total} counts within +{threshold:.0%} of {path.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gate", description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the baseline with today's counts")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--isa", nargs="*", choices=workload.ISAS, help="ISA variants to gate (default: all here)")
    parser.add_argument("--only", nargs="*", choices=[w.name for w in workload.WORKLOADS], metavar="WORKLOAD",
                        help="workloads to count (default: all)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="allowed growth (default 0.03)")
    args = parser.parse_args(argv)
    if not args.update and not args.baseline.exists():
        print(f"gate: error: no baseline at {args.baseline}; record one with --update", file=sys.stderr)
        return 2
    try:
        measured = measure_all(args.isa, args.only)
    except GateError as exc:
        print(f"gate: error: {exc}", file=sys.stderr)
        return 2
    if args.update:
        update(args.baseline, measured, partial=bool(args.only))
        return 0
    return check(args.baseline, measured, args.only, args.threshold)


if __name__ == "__main__":
    sys.exit(main())
