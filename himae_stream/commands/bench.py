"""`himae bench`: this engine's own speed on this machine, per model and ISA.

Window-mode batch-1 latency (median, p99), batch-64 throughput and the cost
of a 1-s stream push. For the side-by-side table against PyTorch, ONNX
Runtime and OpenVINO use `python -m benchmarks.peers`.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from himae_stream.numbers import POSITIVE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", help="model file or shipped name (repeatable; default both shipped)")
    p.add_argument("--isa", action="append", help="ISA to time (repeatable; default every one this CPU has)")
    p.add_argument("--seconds", type=POSITIVE, default=1.0, help="time budget per measurement (default 1)")


def timings(fn, seconds: float, min_calls: int = 20) -> np.ndarray:
    """Per-call wall times in µs of `fn()`, repeated for about `seconds`."""
    fn()
    out, end = [], time.perf_counter() + seconds
    while len(out) < min_calls or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.array(out) * 1e6


def run(args: argparse.Namespace) -> int:
    from himae_stream.model import load_model, supported_isas

    rows = []
    for name in args.model or ["himae-100", "himae-25"]:
        for isa in args.isa or supported_isas():
            model = load_model(name, isa=isa)
            c, length = model.config["in_channels"], model.config["window"]
            rng = np.random.default_rng(0)
            one = rng.standard_normal((c, length)).astype(np.float32)
            batch = rng.standard_normal((64, c, length)).astype(np.float32)
            single = timings(lambda: model.encode(one), args.seconds)
            many = timings(lambda: model.encode(batch), args.seconds, min_calls=3)
            hop = int(model.config["fs"])
            stream = model.stream(hop=hop)
            signal = rng.standard_normal((c, 600 * hop)).astype(np.float32)
            chunks = itertools.cycle(np.split(signal, 600, axis=1))  # 600 s of signal, repeated as needed
            stream.push(next(chunks))
            push = timings(lambda: stream.push(next(chunks)), args.seconds / 4, min_calls=20)
            rows.append((model.config.get("name", name), isa, *np.percentile(single, [50, 99]),
                         64e6 / np.median(many), np.median(push)))
    print("| model | ISA | batch-1 median µs | batch-1 p99 µs | batch-64 windows/s | 1-s stream push µs |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.0f} |")
    return 0
