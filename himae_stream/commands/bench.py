"""`himae bench`: this engine's own speed on this machine, per model and ISA.

Window-mode batch-1 latency (median, p99) on inputs of standard deviation
0.3, 1 and 3, batch-64 throughput and the cost of a 1-s stream push, each
for the shipped weights and for seeded random weights of the same
architecture side by side, and the push in each reduced precision the ISA
has a kernel for (what `--precision` buys on this machine). The two cost the same unless the data makes some
operations slow: trained weights once made GELU underflow into subnormal
floats, which an Intel core handles with a microcode assist, and the shipped
models ran 15-70x slower than random weights until the core flushed them to
zero (csrc/fpmode.h). For the side-by-side table against PyTorch, ONNX
Runtime and OpenVINO use `python -m benchmarks.peers`.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from himae_stream.numbers import POSITIVE

STDS = (0.3, 1.0, 3.0)


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


def random_tensors(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random weights for `config`: normal, standard deviation fan_in^-1/2, biases included.

    The yardstick for timing trained weights (and the asv suite's and the
    instruction-count gate's model, benchmarks/workload.py).
    """
    from himae_stream import modelfile

    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in modelfile.expected_tensors(config, config.get("decoder", True)).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        tensors[name] = rng.normal(0.0, fan_in**-0.5, shape).astype(np.float32)
    return tensors


def measure(model, seconds: float) -> dict:
    """Batch-1 (median, p99) µs per input std, batch-64 windows/s and the median 1-s push µs (std 1)."""
    c, length = model.config["in_channels"], model.config["window"]
    rng = np.random.default_rng(0)
    single = {}
    for std in STDS:
        one = (rng.standard_normal((c, length)) * std).astype(np.float32)
        single[std] = np.percentile(timings(lambda: model.encode(one), seconds), [50, 99])
    batch = rng.standard_normal((64, c, length)).astype(np.float32)
    many = timings(lambda: model.encode(batch), seconds, min_calls=3)
    return {"single": single, "wps": 64e6 / np.median(many), "push": push_time(model, seconds / 4)}


def push_time(model, seconds: float) -> float:
    """Median µs of a 1-s push into a running stream (input std 1)."""
    c, hop = model.config["in_channels"], int(model.config["fs"])
    stream = model.stream(hop=hop)
    signal = np.random.default_rng(0).standard_normal((c, 600 * hop)).astype(np.float32)
    chunks = itertools.cycle(np.split(signal, 600, axis=1))  # 600 s of signal, repeated as needed
    stream.push(next(chunks))
    return float(np.median(timings(lambda: stream.push(next(chunks)), seconds, min_calls=20)))


def run(args: argparse.Namespace) -> int:
    from himae_stream import modelfile, zoo
    from himae_stream.model import load_model, supported_isas, supported_precisions

    rows = []
    with tempfile.TemporaryDirectory(prefix="himae-bench-") as tmp:
        for name in args.model or ["himae-100", "himae-25"]:
            shipped = zoo.resolve(name)
            f = modelfile.read(shipped)
            random = Path(tmp) / f"{shipped.stem}-random.himae"
            modelfile.write(random, f.config, random_tensors(f.config), {"provenance": {"weights": "random, seed 0"}})
            for isa in args.isa or supported_isas():
                s, r = (measure(load_model(p, isa=isa), args.seconds) for p in (shipped, random))
                cells = [f"{s['single'][std][0]:.0f} ({s['single'][std][1]:.0f}) / "
                         f"{r['single'][std][0]:.0f} ({r['single'][std][1]:.0f})" for std in STDS]
                worst = max(s["single"][std][0] / r["single"][std][0] for std in STDS)
                reduced = [f"{p} {push_time(load_model(shipped, isa=isa, precision=p), args.seconds / 4):.0f}"
                           for p in supported_precisions(isa) if p != "f32"]
                rows.append(f"| {f.config['name']} | {isa} | {' | '.join(cells)} | {worst:.2f} | "
                            f"{s['wps']:.0f} / {r['wps']:.0f} | {s['push']:.0f} / {r['push']:.0f} | "
                            f"{', '.join(reduced) or '-'} |")
    stds = " | ".join(f"batch 1, input std {std:g}: µs median (p99), shipped / random" for std in STDS)
    print(f"| model | ISA | {stds} | shipped ÷ random, worst median | batch-64 windows/s, shipped / random "
          "| 1-s stream push µs, shipped / random | the push in reduced precision (`--precision`), shipped |")
    print("|---|---|" + "---:|" * (len(STDS) + 3) + "---|")
    print("\n".join(rows))
    return 0
