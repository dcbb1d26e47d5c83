"""End-to-end latency of `himae run` over the pseudo-terminal serial path.

Replays the bundled PhysioNet record through the simulator at device rate
(100 Hz, real time by default) and reports, per window record, the time from
the chunk that completed the window reaching the pipeline to the record being
ready (p50 / p99), next to the model's algorithmic delay, which is a property
of the convolution stack and reported separately. A script, not a test.

    python -m benchmarks.e2e_latency [--model himae-100] [--duration 60] [--speed 1] [--hop 0.1s]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from importlib import resources

import numpy as np


async def measure(model, duration: float, speed: str, hop: str) -> tuple[list[float], float]:
    from himae_stream.pipeline import run

    record = resources.files("himae_stream") / "data" / "a103l.hea"
    url = f"sim://{record}?channels=PLETH&fs={model.config['fs']:g}&speed={speed}"
    latencies = []
    started = time.perf_counter()
    async for rec in run(url, model, hop=hop, duration=duration):
        latencies.append(rec["latency_ms"])
    return latencies, time.perf_counter() - started


def main() -> None:
    from benchmarks.peers import cpu_model
    from himae_stream.pipeline import load

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="himae-100")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of signal")
    p.add_argument("--speed", default="1")
    p.add_argument("--hop", default="0.1s")
    args = p.parse_args()
    model = load(args.model)
    latencies, wall = asyncio.run(measure(model, args.duration, args.speed, args.hop))
    fs = model.config["fs"]
    delay = model.stream().delay
    p50, p99 = np.percentile(latencies, [50, 99])
    print(f"# himae run end-to-end latency, {time.strftime('%Y-%m-%d')}, {cpu_model()}, 1 thread")
    print(f"model {model.config.get('name')} ({model.isa}), {args.duration:g} s of signal at {fs:g} Hz, "
          f"speed {args.speed}, hop {args.hop}, {len(latencies)} windows, wall {wall:.1f} s")
    print(f"processing latency: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {max(latencies):.3f} ms")
    print("algorithmic delay per level: " + ", ".join(f"L{l} {d} samples ({1e3 * d / fs:.0f} ms)"
                                                     for l, d in enumerate(delay)))


if __name__ == "__main__":
    main()
