"""Many streams per core: what a 1-s push costs per stream when n streams are pushed together,
and how many streams one core keeps in real time.

Each deep level of a 1-s push computes a few new positions but reads all
of its weights for them; `Model.streams(n)` runs each conv once over every
stream's new positions, so the weights are read once per push for all n.
(On the AMD Zen 4 core this was built on, a himae-100 push turned out bound
by arithmetic instead, so grouping saves nothing there: docs/stream-mode.md.)

A server holds thousands of streams, so between two pushes of one stream the
others' pushes evict its own state (about 0.22 MB for himae-100: its engine's
rows, normaliser and running sums at its open windows' edges) from the caches; a push computes in its model's workspace,
which stays warm, but one stream pushed back to back keeps all of its state
warm and runs about 25 % faster.
Each row therefore pushes a pool of `--pool` distinct streams (groups of n,
or separate streams), round robin, each its own PPG-like signal, 10 s in
and then WARM_UP_S 1-s pushes each before any is timed, with the stream
normaliser and a 1-s-hop window completing every push, as `Stream.push`
does. A row gives the median and 99th percentile of a push (of every
stream of a group) and the median cost per stream.

Real-time streams per core: the most streams N (a multiple of n) such that
one core, pushing each group as soon as its last stream's second is complete
(N streams whose seconds complete evenly spread over each second), first in
first out, each push taking the next of the measured push times in the
order they were measured, gives a hop latency (from a stream's complete
second to its push's end) within LATENCY_S for 99 % of the hops over
SCHEDULE_S seconds. Below one core's throughput the measured tail decides.

The clock is wall time, or with `--clock cpu` this process's CPU time. On a
machine that other processes keep busy, a push longer than a scheduler time
slice (a group of 64 takes about 6 ms) is timed with their slices in it,
while most pushes of a few streams (under 1 ms) fall between them: wall time
per stream then seems to grow several-fold with n. CPU time does not.

    python -m benchmarks.many_streams [--model himae-100] [--weights shipped,random]
                                      [--precision f32,bf16dot,int8] [--streams 1,8,64,256,1024]
                                      [--pool 1024] [--seconds 3] [--clock wall]

A precision this CPU has no kernel for (bf16dot without AVX512-BF16, int8
without AVX2, AVX512-VNNI or ARM DotProd) is named and skipped.

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
#: Seconds of the schedule a real-time figure is worked out over.
SCHEDULE_S = 20
#: 1-s pushes before any is timed: a stream's kept sums reach their steady size (the edges of its open
#: windows) once its first window is complete; the rows time streams past that, as a server's are.
WARM_UP_S = 20


def push_times(pushes: list, seconds_of_signal: list, budget_s: float, clock, min_rounds: int = 2) -> np.ndarray:
    """Seconds on `clock` (a peers.CLOCKS function, ns) of each call of `pushes` (one per stream or
    group of the pool), round robin over consecutive seconds of signal, after WARM_UP_S untimed rounds,
    for about budget_s of wall time, in the order they ran."""
    for i in range(WARM_UP_S):
        for push in pushes:
            push(seconds_of_signal[i % len(seconds_of_signal)])
    times = []
    end = time.perf_counter() + budget_s
    i = 0
    while i < min_rounds or time.perf_counter() < end:
        second = seconds_of_signal[i % len(seconds_of_signal)]
        for push in pushes:
            start = clock()
            push(second)
            times.append(clock() - start)
        i += 1
    return np.array(times) * 1e-9


def measure(model, n: int, pool: int, budget_s: float, clock) -> np.ndarray:
    """Seconds of each 1-s push, in order, round robin over at least `pool` distinct streams: groups of
    n, or with n = 0 separate streams (the baseline). The signal repeats its seconds; the normaliser
    does not care."""
    cfg = model.config
    fs, window = int(cfg["fs"]), cfg["window"]
    width = max(n, 1)
    x = signal(window + 30 * fs, cfg["fs"], width)[:, None, :]  # one channel per stream
    seconds = [np.ascontiguousarray(x[..., window + k * fs : window + (k + 1) * fs]) for k in range(30)]
    pushes = []
    for _ in range(max(1, -(-pool // width))):
        if n == 0:
            stream = model.stream(hop="1s")
            stream.push(x[0, :, :window])
            pushes.append(lambda s, stream=stream: stream.push(s[0]))
        else:
            group = model.streams(n, hop="1s")
            group.push(x[..., :window])
            pushes.append(group.push)
    return push_times(pushes, seconds, budget_s, clock)


def worst_hop_latencies(times: np.ndarray, n: int, streams: int) -> np.ndarray:
    """Per group push of the schedule in the module docstring, over SCHEDULE_S seconds: the hop
    latency of its first stream (its group's longest), seconds."""
    groups = streams // n
    spacing = 1.0 / streams  # between two streams' complete seconds
    out = np.empty(SCHEDULE_S * groups)
    free, k = 0.0, 0
    for second in range(SCHEDULE_S):
        for g in range(groups):
            first = second + g * n * spacing  # its first stream's second completes
            start = max(free, first + (n - 1) * spacing)  # pushed when the last one's has
            free = start + times[k % len(times)]
            out[k] = free - first
            k += 1
    return out


def real_time_streams(times: np.ndarray, n: int) -> int:
    """The most streams (a multiple of n) one core keeps within LATENCY_S at p99, pushed n at a time;
    0 where none does (a large group waits longer to fill than the bound allows)."""
    def holds(groups: int) -> bool:
        streams = groups * n
        worst = worst_hop_latencies(times, n, streams)
        # each group's streams wait less than its first by their spacing: every hop's latency, at once
        lags = worst[:, None] - np.arange(n)[None, :] / streams
        return float(np.percentile(lags, 99)) <= LATENCY_S

    # fewer streams wait longer for their group to fill, more queue longer: from the most a core has
    # time for, down until the bound holds, then the largest that holds
    good, bad = int(1 / np.mean(times)), None
    while good >= 1 and not holds(good):
        bad, good = good, min(good - 1, int(good * 0.98))
    if good < 1:
        return 0
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if holds(mid) else (good, mid)
    return good * n


def table(model, counts: list[int], pool: int, budget_s: float, clock) -> tuple[str, int]:
    """The markdown table for one model, and the most real-time streams one core keeps within LATENCY_S."""
    lines = ["| streams pushed together | push of 1 s, median / p99 (ms) | per stream (µs) | vs a separate stream | "
             "real-time streams per core (p99 hop ≤ 50 ms) |", "|---:|---:|---:|---:|---:|"]
    rows = [(n, measure(model, n, pool, budget_s, clock)) for n in (0, *counts)]  # 0: separate streams
    single = float(np.median(rows[0][1]))
    best = 0
    for n, times in rows:
        median, p99 = np.median(times), np.percentile(times, 99)
        keeps = real_time_streams(times, max(n, 1))
        best = max(best, keeps)
        lines.append(f"| {f'{n:,}' if n else 'separate streams'} | {median * 1e3:.3f} / {p99 * 1e3:.3f} | "
                     f"{median / max(n, 1) * 1e6:.1f} | {single / (median / max(n, 1)):.2f}× | "
                     f"{f'{keeps:,}' if keeps else 'none'} |")
    return "\n".join(lines), best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="himae-100")
    parser.add_argument("--weights", default="shipped,random", help="shipped and/or random (comma-separated)")
    parser.add_argument("--precision", default="f32,bf16dot,int8", help="precisions (comma-separated, see load_model)")
    parser.add_argument("--streams", default="1,8,64,256,1024", help="group sizes")
    parser.add_argument("--pool", type=int, default=1024, help="distinct streams pushed round robin per row")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per group size")
    parser.add_argument("--clock", choices=sorted(peers.CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (which other processes do not inflate)")
    args = parser.parse_args()
    from himae_stream import load_model

    counts = [int(n) for n in args.streams.split(",") if n.strip()]
    print(f"## Many streams per core, {args.model}, {datetime.date.today().isoformat()}\n")
    print(f"CPU: {peers.cpu_model()}; one thread; {args.clock} clock; 1-s pushes (hop 1 s) through the normaliser "
          f"and windows, round robin over {args.pool:,} distinct streams per row, 10 s in, then {WARM_UP_S} "
          f"untimed each; ~{args.seconds:g} s of pushes per row.\n")
    for weights in (w.strip() for w in args.weights.split(",") if w.strip()):
        for precision in peers.precisions(args.precision):
            model = load_model(weights_path(args.model, weights), precision=precision)
            text, best = table(model, counts, args.pool, args.seconds, peers.CLOCKS[args.clock])
            print(f"### {weights} weights, {precision}\n\n{text}\n\n"
                  f"One core: {best:,} real-time streams (target ≥ 20,000).\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
