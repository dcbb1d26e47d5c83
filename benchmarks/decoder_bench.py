"""Reconstruction latency, batch 1: this engine against PyTorch eager and ONNX Runtime.

The full autoencoder (encoder, decoder, tanh head) on one window with the
pretraining mask (80 % of 5-sample patches zeroed), same seeded weights in
every runtime, everything single-threaded. Prints a markdown table: median
and p99 latency per runtime and the peer/engine ratio (above 1: the engine is
faster). A script, never a timed test:

    python -m benchmarks.decoder_bench [--repeats 500]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch / onnxruntime load their thread pools

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.peers import cpu_model  # noqa: E402

CONFIG_NAMES = ("himae-100", "himae-25")


def latencies_us(fn, repeats: int, warmup: int = 50) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def runtimes(name: str, folder: Path):
    """(label, callable) pairs that reconstruct the same masked window."""
    import onnxruntime as ort
    import torch

    from benchmarks.workload import patch_mask, signal
    from himae_stream.model import load_model, supported_isas
    from training import HiMAE, export_model, get_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = HiMAE(get_config(name)).eval()
    cfg = model.config
    x = signal(cfg["window"], cfg["fs"], cfg["in_channels"])
    mask = patch_mask(cfg["window"], cfg["patch_size"], cfg["mask_ratio"])
    zeroed = torch.from_numpy(np.where(mask, 0, x)[None].astype(np.float32))

    path = folder / f"{name}.himae"
    export_model(model, path)
    for isa in supported_isas():
        engine = load_model(path, isa)
        yield f"himae-stream ({isa})", lambda e=engine: e.reconstruct(x, mask)

    def eager():
        with torch.inference_mode():
            model(zeroed)

    yield "PyTorch eager", eager

    onnx_path = folder / f"{name}.onnx"
    torch.onnx.export(model, (zeroed,), str(onnx_path), opset_version=17, input_names=["x"],
                      output_names=["y"], dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {"x": zeroed.numpy()}
    yield "ONNX Runtime", lambda: session.run(None, feed)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=500)
    p.add_argument("--models", nargs="+", default=list(CONFIG_NAMES), choices=CONFIG_NAMES)
    args = p.parse_args(argv)

    lines = [
        f"Reconstruct, batch 1 ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, 1 thread, "
        f"{args.repeats} calls after warm-up)",
        "",
        "| model | runtime | median µs | p99 µs | median / best engine |",
        "|---|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows = [(label, latencies_us(fn, args.repeats)) for label, fn in runtimes(name, Path(tmp))]
            best = min(np.median(t) for label, t in rows if label.startswith("himae-stream"))
            for label, t in rows:
                lines.append(f"| {name} | {label} | {np.median(t):.0f} | {np.percentile(t, 99):.0f} | "
                             f"{np.median(t) / best:.2f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
