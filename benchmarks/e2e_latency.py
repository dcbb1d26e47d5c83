"""End-to-end latency of `himae run` over the pseudo-terminal serial path.

The simulator (`himae sim`) runs in its own process, as a real device would,
replaying the bundled PhysioNet record at 100 Hz in real time on a
pseudo-terminal; the pipeline reads it with `serial://` in this process.
On a machine with two or more CPUs the device and the pipeline each get a
CPU of their own (a wearable is its own hardware, and its wake-ups should
not evict the pipeline's caches); `--no-pin` leaves placement to the OS.
Reported per window record released by a live sample (not the last windows the
end of the run releases together): the time from the serial read that delivered the
bytes completing the window to the record being ready (p50 / p99): deframing,
reordering, normaliser, stream engine, probe heads and imputation, next to
the model's algorithmic delay, a property of the convolution stack reported
separately. Where the time goes is reported per stage (`pipeline.STAGES`:
read, wait, engine, heads, record) at the median and over the slowest 1 % of
records, and the time a JSONL sink then takes to write each record. A script,
not a test.

    python -m benchmarks.e2e_latency [--model himae-100] [--precision f32] [--duration 60] [--hop 0.1s]
                                     [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources

import numpy as np


def start_device(fs: float, duration: float) -> tuple[subprocess.Popen, str]:
    """`himae sim` on a pseudo-terminal in a child process; returns it and its source URL."""
    record = resources.files("himae_stream") / "data" / "a103l.hea"
    sim = subprocess.Popen(
        [sys.executable, "-m", "himae_stream.cli", "sim", "--recording", str(record), "--channels", "PLETH",
         "--fs", f"{fs:g}", "--duration", f"{duration:g}"],
        stdout=subprocess.PIPE, text=True,
    )
    for line in sim.stdout:
        if line.startswith("source: "):
            return sim, line.split(" ", 1)[1].strip()
    raise RuntimeError("the simulator did not announce its serial port")


async def measure(model, url: str, duration: float, hop: str, sink) -> tuple[list[float], list, list[float]]:
    """Each record's latency, its stages (ms, as pipeline.STAGES) and the sink's write time (ms)."""
    from himae_stream.pipeline import run

    latencies, writes, core, live = [], [], [], []
    async for record in run(url, model, hop=hop, duration=duration, pipeline=core, quiet_gc=True):
        latencies.append(record["latency_ms"])
        live.append(not core[0].ended)  # the end of the run releases the last windows at once
        started = time.perf_counter()
        sink.write(record)
        writes.append(1e3 * (time.perf_counter() - started))
    keep = np.flatnonzero(live)
    stages = list(core[0].stages)[-len(live):]
    return [latencies[i] for i in keep], [stages[i] for i in keep], [writes[i] for i in keep]


def stage_table(latencies: list[float], stages: list, writes: list[float]) -> list[str]:
    """Per stage, its median and its mean over the records at or above the p99 latency."""
    from himae_stream.pipeline import STAGES

    lat, st, wr = np.asarray(latencies), np.asarray(stages), np.asarray(writes)
    tail = lat >= np.percentile(lat, 99)
    lines = ["| stage | median (ms) | mean over the slowest 1 % (ms) |", "|---|---:|---:|"]
    for k, name in enumerate(STAGES):
        lines.append(f"| {name} | {np.median(st[:, k]):.3f} | {st[tail, k].mean():.3f} |")
    lines.append(f"| (after the record) sink write, JSONL | {np.median(wr):.3f} | {wr[tail].mean():.3f} |")
    return lines


def main() -> None:
    from benchmarks.peers import cpu_model
    from himae_stream.pipeline import load
    from himae_stream.sinks import open_sink
    from himae_stream.stream import to_samples

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="himae-100")
    p.add_argument("--precision", default="f32", help="the model's weights (see load_model)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of signal")
    p.add_argument("--hop", default="0.1s")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="give the device and the pipeline a CPU each (default when there are two)")
    args = p.parse_args()
    model = load(args.model, args.precision)
    fs = model.config["fs"]
    folder = tempfile.TemporaryDirectory()
    sink = open_sink(f"jsonl://{folder.name}/records.jsonl")
    try:
        to_samples(args.hop, fs, "hop")
    except ValueError as exc:
        p.error(str(exc))
    sim, url = start_device(fs, args.duration + 5)
    cpus = sorted(os.sched_getaffinity(0))
    placement = "OS-placed"
    if args.pin and len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[0]})
        os.sched_setaffinity(sim.pid, {cpus[1]})
        placement = f"pipeline on CPU {cpus[0]}, device on CPU {cpus[1]}"
    try:
        started = time.perf_counter()
        latencies, stages, writes = asyncio.run(measure(model, url, args.duration, args.hop, sink))
        wall = time.perf_counter() - started
    finally:
        sim.kill()
        sim.wait()
        sink.close()
        folder.cleanup()
    p50, p99 = np.percentile(latencies, [50, 99])
    print(f"# himae run end-to-end latency, {time.strftime('%Y-%m-%d')}, {cpu_model()}, 1 thread")
    print(f"model {model.config.get('name')} ({model.isa}, {model.precision}), device process at {fs:g} Hz in real time over a "
          f"pseudo-terminal, {args.duration:g} s of signal, hop {args.hop}, {len(latencies)} windows, wall {wall:.1f} s, "
          f"{placement}")
    print(f"serial read to record: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {max(latencies):.3f} ms")
    print("\n".join(stage_table(latencies, stages, writes)))
    delay = model.stream().delay
    print("algorithmic delay per level: " + ", ".join(f"L{l} {d} samples ({1e3 * d / fs:.0f} ms)"
                                                     for l, d in enumerate(delay)))


if __name__ == "__main__":
    main()
