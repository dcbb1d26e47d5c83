"""Stream mode vs window mode and the fastest peer: what one new second of signal costs.

For each configuration, in one run on the same weights (benchmarks.peers
builds the model and the peers): the steady-state cost of pushing 1 s of
signal (fs samples) into a running stream, both into the engine alone
(already-normalised samples, `StreamEngine.push`) and through the whole
`Stream.push` (stream normaliser, a 1-s-hop window completing every push);
this engine's window-mode latency (one window, batch 1) and the fastest
peer's full-window latency, which is what recomputing the window at every
hop costs; then the real-time factor of `Stream` over one hour of signal on
one core. Each for the shipped weights and seeded random weights, on a
PPG-like signal scaled to standard deviation 0.3, 1 and 3 (trained weights
once made activations subnormal and every cost 15-70x higher on an Intel
core; see csrc/fpmode.h). Prints a markdown table.

    python -m benchmarks.stream_bench [--models himae-100,himae-25] [--weights shipped,random]
                                      [--stds 0.3,1,3] [--clock cpu]

Each push is timed in f32, bf16, bf16dot and int8 (`--precision`; bf16dot
where the CPU has AVX512-BF16, int8 where it has AVX2, AVX512-VNNI or ARM DotProd); window mode
is always the f32 engine's. Targets:
1-s push <= 1/6 of window-mode latency and <= 1/8 of the fastest peer
(reduced precision: <= 1/10);
>= 10,000x real time. A script, not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import peers
from benchmarks.workload import signal


def push_costs(model, seconds: float, std: float | None = None) -> tuple[float, float]:
    """Median µs of one 1-s push into the engine and into a Stream, both running for two windows,
    of the PPG-like signal (scaled to `std`, see workload.signal)."""
    cfg = model.config
    warm = signal(2 * cfg["window"], cfg["fs"], cfg["in_channels"], std=std)
    second = signal(round(cfg["fs"]), cfg["fs"], cfg["in_channels"], seed=1, std=std)
    stream = model.stream(hop="1s")
    stream.push(warm)
    engine = model.stream(normalize=False)._engine
    engine.push(warm)
    return tuple(float(np.median(peers.measure(call, seconds))) * 1e6
                 for call in (lambda: engine.push(second), lambda: stream.push(second)))


def realtime_factor(model, std: float | None = None, hours: float = 1.0, chunk_s: float = 60.0) -> float:
    """Signal seconds per second of compute: `hours` of signal (scaled to `std`) pushed in `chunk_s`
    chunks, then flushed."""
    cfg = model.config
    fs = cfg["fs"]
    x = signal(round(hours * 3600 * fs), fs, cfg["in_channels"], std=std)
    step = round(chunk_s * fs)
    stream = model.stream(hop="1s")
    start = peers.clock()
    for i in range(0, x.shape[1], step):
        stream.push(x[:, i : i + step])
    stream.flush()
    return hours * 3600 / ((peers.clock() - start) * 1e-9)


HEADER = (
    "| model | 1-s push: engine / Stream (µs) | window mode, batch 1 (µs) | fastest peer, full window (µs) | "
    "push ÷ window mode, engine / Stream (target ≤ 0.167) | push ÷ peer, engine / Stream (target ≤ 0.125) | "
    "Stream real time, 1 h on one core (target ≥ 10,000×) |\n|---|---:|---:|---:|---:|---:|---:|"
)


def row(name: str, push: list[tuple[float, float]], window_us: float, peer_us: float, peer: str | None,
        rtf: float) -> str:
    """One table row from every round's push costs (best kept) and the window-mode and peer latencies."""
    e, p = (min(costs) for costs in zip(*push))
    return (f"| {name} | {e:.0f} / {p:.0f} | {window_us:.0f} | {peer_us:.0f} ({peer}) | "
            f"{e / window_us:.3f} / {p / window_us:.3f} | {e / peer_us:.3f} / {p / peer_us:.3f} | {rtf:,.0f}× |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="himae-100,himae-25")
    parser.add_argument("--peers", default="eager,torchscript,onnxruntime,openvino")
    parser.add_argument("--weights", default="shipped,random", help="shipped and/or random (comma-separated)")
    parser.add_argument("--stds", default="0.3,1,3", help="standard deviations of the input signal")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per measurement and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each measurement's best round is kept")
    parser.add_argument("--clock", choices=sorted(peers.CLOCKS), default="wall",
                        help="wall time, or process CPU time on a machine shared with other work")
    parser.add_argument("--precision", default="f32,bf16,bf16dot,int8",
                        help="precisions whose pushes are timed (comma-separated; window mode is f32's)")
    args = parser.parse_args()
    peers.clock = peers.CLOCKS[args.clock]
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    from himae_stream import load_model

    print(f"## Stream mode, {datetime.date.today().isoformat()}\n")
    print(f"CPU: {peers.cpu_model()}; one thread everywhere; {args.clock} clock; medians, best of "
          f"{args.rounds} rounds of ~{args.seconds:g} s.\n")
    timed = peers.precisions(args.precision)
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        conditions = [(name, weights, float(std)) for name in args.models.split(",") if name.strip()
                      for weights in args.weights.split(",") if weights.strip()
                      for std in args.stds.split(",") if std.strip()]
        for name, weights, std in conditions:
            _, runners, path = peers.build_runners(name.strip(), Path(tmp), wanted, weights.strip(), std)
            models = {p: load_model(path, precision=p) for p in timed}
            window = {label: [] for label in runners}
            push = {p: [] for p in models}
            for _ in range(args.rounds):  # interleaved, so every number sees the same machine
                for p, model in models.items():
                    push[p].append(push_costs(model, args.seconds, std))
                for label, runs in runners.items():
                    window[label].append(np.median(peers.measure(runs[1], args.seconds)) * 1e6)
            best = {label: min(times) for label, times in window.items()}
            ours_label = next(iter(runners))
            fastest = min((label for label in best if label != ours_label), key=best.get, default=None)
            peer = best[fastest] if fastest else float("nan")
            for p, model in models.items():
                print(row(f"{name.strip()} {p}, {weights.strip()}, std {std:g}", push[p], best[ours_label], peer,
                          fastest, realtime_factor(model, std)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
