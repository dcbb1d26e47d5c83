"""Peer comparison: this engine vs PyTorch eager, TorchScript, ONNX Runtime, OpenVINO.

Same model and weights everywhere, single thread everywhere, window-mode
encoder producing every level, for the shipped weights and for seeded random
weights (randomised BatchNorm statistics, BatchNorm folded only where each
runtime folds it), each on Gaussian inputs of standard deviation 0.3, 1 and
3. Prints a markdown table per model, weights and input std (the README
embeds the one of random weights at std 1): batch-1 median and p99 latency,
batch-64 windows/s, this engine's ratio to each peer, and its achieved
GFLOP/s against this CPU's single-core sgemm measured in the same run; then
every runtime's shipped and random latencies side by side (trained weights
once made this engine's activations subnormal and 15-70x slower on an Intel
core; see csrc/fpmode.h); then stream mode's table (benchmarks.stream_bench):
the cost of pushing 1 s into a running stream (a PPG-like signal of the
same std) against those window latencies, measured in the same rounds.

    python -m benchmarks.peers [--models himae-100,himae-25] [--weights shipped,random] [--stds 0.3,1,3]
                               [--seconds 2] [--rounds 3] [--no-stream]

A script, not a test: timings are noisy and nothing here fails a build.
Needs the `bench` extra (onnx, onnxruntime, openvino) and `train` (torch).
"""

from __future__ import annotations

import os

# Thread pools are sized when the libraries load: pin them before any import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

BATCH = 64


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def precisions(wanted: str) -> list[str]:
    """The comma-separated precisions this CPU runs with its best kernels (bf16dot needs AVX512-BF16, int8
    AVX2, AVX512-VNNI or ARM DotProd), naming on stdout any it skips."""
    from himae_stream.model import supported_precisions

    names = [p.strip() for p in wanted.split(",") if p.strip()]
    here = supported_precisions()
    for name in names:
        if name not in here:
            print(f"(precision {name} skipped: this CPU runs {', '.join(here)})\n")
    return [name for name in names if name in here]


def encoder_flops(config: dict) -> float:
    """Multiply-adds x 2 of one window through the encoder (convs only)."""
    k, c_in, n_in, flops = config["kernel_size"], config["in_channels"], config["window"], 0.0
    for c in config["channels"]:
        n = -(-n_in // 2)
        flops += 2.0 * n * c * (c_in * k + c * k + c_in)
        c_in, n_in = c, n
    return flops


def sgemm_gflops(n: int = 1024, repeats: int = 7) -> float:
    """numpy float32 n^3 matmul with one BLAS thread: best of `repeats`."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


#: Clock of every timing: wall time, or this process's CPU time (all its threads),
#: which a busy shared machine's other processes do not inflate.
CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.process_time_ns}
clock = CLOCKS["wall"]


def _timed(fn: Callable[[], object]) -> float:
    t = clock()
    fn()
    return (clock() - t) * 1e-9


def measure(fn: Callable[[], object], seconds: float, min_calls: int = 30) -> np.ndarray:
    """Per-call times (s) after a warm-up, for about `seconds` of wall time."""
    for _ in range(5):
        fn()
    times = []
    end = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < end:
        t = clock()
        fn()
        times.append(clock() - t)
    return np.array(times) * 1e-9


def _bind(fn: Callable, arg) -> Callable[[], object]:
    """fn with its argument fixed: what one timed call runs."""
    return lambda: fn(arg)


def build_runners(name: str, tmp: Path, peers: list[str], weights: str = "random",
                  std: float = 1.0) -> tuple[dict, dict[str, dict[int, Callable]], Path]:
    """The config, per runtime a callable per batch size running the encoder on inputs of
    standard deviation `std`, and this engine's model file: the shipped model `name`, or
    its configuration with seeded random weights."""
    import torch

    from himae_stream import load_model, zoo
    from training import HiMAE, export_model, get_config
    from training.frozen import load_model_file
    from training.model import randomize_batchnorm

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if weights == "shipped":
        path = zoo.resolve(name)
        model = load_model_file(path)
        config = model.config
    else:
        config = get_config(name)
        model = randomize_batchnorm(HiMAE(config), 1).eval()
        path = tmp / f"{name}.himae"
        export_model(model, path)

    class Encoder(torch.nn.Module):
        def __init__(self, himae):
            super().__init__()
            self.blocks = himae.encoder

        def forward(self, x):
            levels = []
            for block in self.blocks:
                x = block(x)
                levels.append(x)
            return tuple(levels)

    encoder = Encoder(model).eval()
    inputs = {b: (np.random.default_rng(b).standard_normal((b, 1, config["window"])) * std).astype(np.float32)
              for b in (1, BATCH)}
    runners: dict[str, dict[int, Callable]] = {}

    engine = load_model(path)
    runners[f"himae-stream ({engine.isa})"] = {b: _bind(engine.encode, x) for b, x in inputs.items()}

    if "eager" in peers:
        def eager(x):
            with torch.inference_mode():
                return encoder(x)
        runners["PyTorch eager"] = {b: _bind(eager, torch.from_numpy(x)) for b, x in inputs.items()}
    if "torchscript" in peers:
        with torch.inference_mode():
            traced = torch.jit.freeze(torch.jit.trace(encoder, torch.from_numpy(inputs[1])))
        def scripted(x):
            with torch.inference_mode():
                return traced(x)
        runners["TorchScript (trace+freeze)"] = {b: _bind(scripted, torch.from_numpy(x)) for b, x in inputs.items()}
    onnx_path = tmp / f"{name}.onnx"
    if "onnxruntime" in peers or "openvino" in peers:
        torch.onnx.export(encoder, (torch.from_numpy(inputs[1]),), str(onnx_path), opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    if "onnxruntime" in peers:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        runners["ONNX Runtime"] = {b: _bind(lambda feed: sess.run(None, feed), {"x": x}) for b, x in inputs.items()}
    if "openvino" in peers:
        import openvino as ov

        core = ov.Core()
        ov_runs = {}
        for b, x in inputs.items():
            ov_model = core.read_model(str(onnx_path))
            ov_model.reshape({"x": list(x.shape)})
            compiled = core.compile_model(ov_model, "CPU", {
                "INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
            })
            request = compiled.create_infer_request()
            ov_runs[b] = _bind(request.infer, {"x": x})
        runners["OpenVINO f32"] = ov_runs

    # Every runtime computes the same levels (a wrong peer would make the table meaningless).
    want = [np.asarray(a) for a in engine.encode(inputs[1])]
    for label, runs in runners.items():
        out = runs[1]()
        got = [np.asarray(a) for a in (out.values() if hasattr(out, "values") else out)]
        worst = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
        if worst > 1e-3:
            raise SystemExit(f"{label} disagrees with this engine on {name}: max abs {worst:.3g}")
    return config, runners, path


def timed_rounds(runners: dict[str, dict[int, Callable]], seconds: float, rounds: int,
                 between: Callable[[], None] | None = None) -> dict[str, dict]:
    """Per runtime: best round's batch-1 median and its p99 (s), best batch-64 windows/s.

    Rounds are interleaved, so every runtime sees the same machine noise;
    `between` runs at the start of every round (the stream-mode timing).
    """
    stats: dict[str, dict] = {}
    for _ in range(rounds):
        if between:
            between()
        for label, runs in runners.items():
            t1 = measure(runs[1], seconds)
            tb = measure(runs[BATCH], seconds, min_calls=5)
            cur = {"median": np.median(t1), "p99": np.percentile(t1, 99), "wps": BATCH / np.median(tb)}
            best = stats.setdefault(label, cur)
            if cur["median"] < best["median"]:
                best["median"], best["p99"] = cur["median"], cur["p99"]
            best["wps"] = max(best["wps"], cur["wps"])
    return stats


def print_table(title: str, config: dict, stats: dict[str, dict], peak: float) -> tuple[str, float, float]:
    """One condition's table; (this engine's label, its GFLOP/s at batch 1, at batch 64)."""
    ours_label = next(iter(stats))
    ours = stats[ours_label]
    flops = encoder_flops(config)
    print(f"### {title} (window {config['window']}, channels {config['channels']}, "
          f"{flops / 1e6:.1f} MFLOP per window)\n")
    print("| runtime | batch-1 median (µs) | batch-1 p99 (µs) | batch-64 windows/s | "
          "this engine's latency ÷ peer | this engine's throughput ÷ peer |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, s in stats.items():
        lat = "—" if label == ours_label else f"{ours['median'] / s['median']:.2f}"
        thr = "—" if label == ours_label else f"{ours['wps'] / s['wps']:.2f}"
        print(f"| {label} | {s['median'] * 1e6:.0f} | {s['p99'] * 1e6:.0f} | {s['wps']:.0f} | {lat} | {thr} |")
    g1, g64 = flops / ours["median"] / 1e9, flops * ours["wps"] / 1e9
    print(f"\nThis engine: {g1:.1f} GFLOP/s at batch 1 ({100 * g1 / peak:.0f} % of sgemm), "
          f"{g64:.1f} GFLOP/s at batch 64 ({100 * g64 / peak:.0f} % of sgemm).\n")
    return ours_label, g1, g64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="himae-100,himae-25")
    parser.add_argument("--peers", default="eager,torchscript,onnxruntime,openvino")
    parser.add_argument("--weights", default="shipped,random", help="shipped and/or random (comma-separated)")
    parser.add_argument("--stds", default="0.3,1,3", help="standard deviations of the Gaussian inputs")
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per runtime, batch and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runtime's best round is kept")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or process CPU time on a machine shared with other work")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                        help="also time stream mode's 1-s push and real-time factor")
    parser.add_argument("--precision", default="f32,bf16,bf16dot,int8",
                        help="precisions whose stream pushes are timed (window mode is f32's)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    weight_kinds = [w.strip() for w in args.weights.split(",") if w.strip()]
    stds = [float(s) for s in args.stds.split(",") if s.strip()]
    timed = precisions(args.precision)

    peak = sgemm_gflops()
    print(f"## Peer comparison, {datetime.date.today().isoformat()}\n")
    print(f"CPU: {cpu_model()}; threads: 1 everywhere; single-core sgemm (numpy float32 1024^3): "
          f"{peak:.1f} GFLOP/s; {args.clock} clock; best of {args.rounds} rounds of ~{args.seconds:g} s "
          "per runtime.\n")
    summary, side_by_side, stream_rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            medians: dict[tuple[str, float], dict[str, float]] = {}
            for weights in weight_kinds:
                for std in stds:
                    config, runners, path = build_runners(name, Path(tmp), peers, weights, std)
                    between = None
                    if args.stream:
                        from benchmarks import stream_bench
                        from himae_stream import load_model

                        models = {p: load_model(path, precision=p) for p in timed}
                        push = {p: [] for p in models}

                        def between():
                            for p, model in models.items():
                                push[p].append(stream_bench.push_costs(model, args.seconds, std))
                    stats = timed_rounds(runners, args.seconds, args.rounds, between)
                    ours_label, g1, _ = print_table(f"{name}, {weights} weights, input std {std:g}", config, stats, peak)
                    medians[(weights, std)] = {label: s["median"] for label, s in stats.items()}
                    ours = stats[ours_label]
                    peers_only = {k: v for k, v in stats.items() if k != ours_label}
                    fastest = min(peers_only, key=lambda k: peers_only[k]["median"], default=None)
                    if fastest:
                        best_wps = max(peers_only, key=lambda k: peers_only[k]["wps"])
                        summary.append((f"{name}, {weights}, std {std:g}", fastest,
                                        ours["median"] / peers_only[fastest]["median"], best_wps,
                                        ours["wps"] / peers_only[best_wps]["wps"], g1 / peak))
                    if between:
                        peer_us = peers_only[fastest]["median"] * 1e6 if fastest else float("nan")
                        for p, model in models.items():
                            stream_rows.append(stream_bench.row(f"{name} {p}, {weights}, std {std:g}", push[p],
                                                                ours["median"] * 1e6, peer_us, fastest,
                                                                stream_bench.realtime_factor(model, std)))
            if {"shipped", "random"} <= set(weight_kinds):
                for label in medians[("random", stds[0])]:
                    if label not in medians[("shipped", stds[0])]:
                        continue
                    cells = [f"{medians[('shipped', std)][label] * 1e6:.0f} / {medians[('random', std)][label] * 1e6:.0f}"
                             for std in stds]
                    worst = max(medians[("shipped", std)][label] / medians[("random", std)][label] for std in stds)
                    side_by_side.append(f"| {name} | {label} | {' | '.join(cells)} | {worst:.2f} |")
    if summary:
        print("### Summary\n")
        print("| model, weights, input std | fastest peer (batch 1) | latency ratio | best peer (batch 64) "
              "| throughput ratio | share of sgemm |")
        print("|---|---|---:|---|---:|---:|")
        for name, fastest, lat, best_wps, thr, share in summary:
            print(f"| {name} | {fastest} | {lat:.2f} | {best_wps} | {thr:.2f} | {100 * share:.0f} % |")
    if side_by_side:
        print("\n### Shipped vs random weights: batch-1 median (µs), shipped / random\n")
        print("| model | runtime | " + " | ".join(f"input std {std:g}" for std in stds) + " | shipped ÷ random, worst |")
        print("|---|---|" + "---:|" * (len(stds) + 1))
        print("\n".join(side_by_side))
    if stream_rows:
        print("\n### Stream mode: one new second of signal\n")
        print(stream_bench.HEADER)
        print("\n".join(stream_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
