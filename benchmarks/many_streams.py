"""Many streams per core: what a 1-s push costs per stream when n streams are pushed together.

Each deep level of a 1-s push computes a few new positions but reads all
of its weights for them; `Model.streams(n)` runs each conv once over every
stream's new positions, so the weights are read once per push for all n.
(On the AMD Zen 4 core this was built on, a himae-100 push turned out bound
by arithmetic instead, so grouping saves nothing there: docs/stream-mode.md.) For n = 1, 8, 64, 256,
1024 streams (each its own PPG-like signal, 10 s in and then WARM_UP_S
1-s pushes, the stream normaliser and a 1-s-hop window completing every
push, as `Stream.push` does), this measures the time of one push of 1 s
into every stream of the group: its median divided by n (the cost per
stream) and its 99th percentile (the hop latency every stream of the group
sees). One core keeps n·⌊1 s / p99⌋ streams in real time with groups of n,
each group's push done before its next second arrives; the answer is the
best n whose p99 is within the latency bound (50 ms). A separate
`Model.stream` per stream is the baseline. Prints a markdown table per
weights.

The clock is wall time, or with `--clock cpu` this process's CPU time. On a
machine that other processes keep busy, a push longer than a scheduler time
slice (a group of 64 takes about 6 ms) is timed with their slices in it,
while most pushes of a few streams (under 1 ms) fall between them: wall time
per stream then seems to grow several-fold with n. CPU time does not.

    python -m benchmarks.many_streams [--model himae-100] [--weights shipped,random]
                                      [--precision f32,bf16dot] [--streams 1,8,64,256,1024]
                                      [--seconds 3] [--clock wall]

A precision this CPU has no kernel for (bf16dot without AVX512-BF16) is
named and skipped.

Target: at least 20,000 real-time streams per core with p99 hop latency
<= 50 ms. A script, not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np

from benchmarks import peers
from benchmarks.workload import signal, weights_path

LATENCY_S = 0.050
#: 1-s pushes before any is timed: a stream's running sums reach their steady size (four times what its
#: open windows need) in its first hundred-odd seconds, writing fresh pages as they go, about eight page
#: faults per stream and push at first; the rows time streams past that, as a server's are.
WARM_UP_S = 120


def push_times(push, seconds_of_signal: list, budget_s: float, clock, min_pushes: int = 20) -> np.ndarray:
    """Seconds on `clock` (a peers.CLOCKS function, ns) of each push(second) over consecutive seconds of
    signal, after WARM_UP_S untimed ones, for about budget_s of wall time."""
    for i in range(WARM_UP_S):
        push(seconds_of_signal[i % len(seconds_of_signal)])
    times = []
    end = time.perf_counter() + budget_s
    i = 0
    while len(times) < min_pushes or time.perf_counter() < end:
        second = seconds_of_signal[i % len(seconds_of_signal)]
        start = clock()
        push(second)
        times.append(clock() - start)
        i += 1
    return np.array(times) * 1e-9


def measure(model, n: int, budget_s: float, clock) -> tuple[float, float]:
    """(median, p99) seconds of a 1-s push into each of n streams: a group of n, or with n = 0 one
    separate stream (the baseline). The signal repeats its seconds; the normaliser does not care."""
    cfg = model.config
    fs, window = int(cfg["fs"]), cfg["window"]
    x = signal(window + 30 * fs, cfg["fs"], max(n, 1))[:, None, :]  # one channel per stream
    seconds = [x[..., window + k * fs : window + (k + 1) * fs] for k in range(30)]
    if n == 0:
        stream = model.stream(hop="1s")
        stream.push(x[0, :, :window])
        times = push_times(lambda s: stream.push(s[0]), seconds, budget_s, clock)
    else:
        group = model.streams(n, hop="1s")
        group.push(x[..., :window])
        times = push_times(group.push, seconds, budget_s, clock)
    return float(np.median(times)), float(np.percentile(times, 99))


def table(model, counts: list[int], budget_s: float, clock) -> tuple[str, int]:
    """The markdown table for one model, and the most real-time streams one core keeps within LATENCY_S."""
    lines = ["| streams pushed together | push of 1 s, median / p99 (ms) | per stream (µs) | vs a separate stream | "
             "real-time streams per core (p99 ≤ 50 ms) |", "|---:|---:|---:|---:|---:|"]
    single, _ = measure(model, 0, budget_s, clock)
    lines.append(f"| separate streams | {single * 1e3:.3f} / – | {single * 1e6:.1f} | 1.00× | {int(1 / single):,} |")
    best = 0
    for n in counts:
        median, p99 = measure(model, n, budget_s, clock)
        fits = p99 <= LATENCY_S
        keeps = n * int(1 / p99) if fits else 0
        best = max(best, keeps)
        lines.append(f"| {n:,} | {median * 1e3:.2f} / {p99 * 1e3:.2f} | {median / n * 1e6:.1f} | "
                     f"{single / (median / n):.2f}× | {f'{keeps:,}' if fits else 'p99 over 50 ms'} |")
    return "\n".join(lines), best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="himae-100")
    parser.add_argument("--weights", default="shipped,random", help="shipped and/or random (comma-separated)")
    parser.add_argument("--precision", default="f32,bf16dot", help="precisions (comma-separated, see load_model)")
    parser.add_argument("--streams", default="1,8,64,256,1024", help="group sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per group size")
    parser.add_argument("--clock", choices=sorted(peers.CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (which other processes do not inflate)")
    args = parser.parse_args()
    from himae_stream import load_model

    counts = [int(n) for n in args.streams.split(",") if n.strip()]
    print(f"## Many streams per core, {args.model}, {datetime.date.today().isoformat()}\n")
    print(f"CPU: {peers.cpu_model()}; one thread; {args.clock} clock; 1-s pushes (hop 1 s) through the normaliser "
          f"and windows, 10 s in, then {WARM_UP_S} untimed; ~{args.seconds:g} s of pushes per row.\n")
    for weights in (w.strip() for w in args.weights.split(",") if w.strip()):
        for precision in peers.precisions(args.precision):
            model = load_model(weights_path(args.model, weights), precision=precision)
            text, best = table(model, counts, args.seconds, peers.CLOCKS[args.clock])
            print(f"### {weights} weights, {precision}\n\n{text}\n\n"
                  f"One core: {best:,} real-time streams (target ≥ 20,000).\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
