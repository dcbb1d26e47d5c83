"""What the benchmarks run: models, inputs, and the fixed workload of the gate.

The asv suite (bench_*.py) and the instruction-count gate (gate.py) share the
same models and inputs from here, so a number in one can be traced in the other.
The gate's models carry seeded random weights, so that a retrained shipped
model cannot move its baseline. Timing can depend on what the weights learned
(trained weights once made activations subnormal, which an Intel core
computes with microcode assists), so the asv suite also times the shipped
models, on inputs of several standard deviations (`WEIGHTS`, `STDS`).

Run as `python -m benchmarks.workload --models DIR --isa ISA` under callgrind
(gate.py does that): every model is loaded and every workload warmed up outside
the counted region, then each workload is counted alone and dumped under its
name through the client requests of gate_marker.c.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

CONFIG_NAMES = ("himae-100", "himae-25")
ISAS = ("scalar", "avx2", "avx512", "neon")
CACHE = Path(os.environ.get("HIMAE_BENCH_CACHE", Path(tempfile.gettempdir()) / "himae-bench"))
SEED = 0
WEIGHTS = ("random", "shipped")
STDS = (0.3, 1.0, 3.0)


def model_path(name: str, cache: Path = CACHE) -> Path:
    """A model file of configuration `name` with seeded random weights, written once into `cache`."""
    path = cache / f"{name}-random{SEED}.himae"
    if path.exists():
        return path
    from himae_stream import modelfile
    from himae_stream.commands.bench import random_tensors
    from training.configs import get_config  # imports torch with the training package

    config = get_config(name)
    tensors = random_tensors(config, SEED)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    modelfile.write(partial, config, tensors, {"provenance": {"weights": f"random, seed {SEED}"}})
    partial.replace(path)
    return path


def weights_path(name: str, weights: str, cache: Path = CACHE) -> Path:
    """The model file of configuration `name` with "random" (model_path) or "shipped" weights."""
    if weights == "shipped":
        from himae_stream import zoo

        return zoo.resolve(name)
    return model_path(name, cache)


def signal(n: int, fs: float, channels: int = 1, seed: int = SEED, std: float | None = None) -> np.ndarray:
    """A PPG-like float32 signal (C, n) in [-1, 1]: a 72 bpm pulse with harmonics and noise.

    With `std`: the same z-scored, then scaled to that standard deviation
    (what a user passes to Model.encode has std 1).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    pulse = sum(np.sin(2 * np.pi * 1.2 * h * t + h) / h for h in (1, 2, 3))
    x = np.clip(0.6 * pulse + 0.05 * rng.standard_normal((channels, n)), -1.0, 1.0)
    if std is not None:
        x = (x - x.mean()) / x.std() * std
    return x.astype(np.float32)


def patch_mask(length: int, patch: int, ratio: float, seed: int = SEED) -> np.ndarray:
    """The pretraining mask: `ratio` of the patches of `patch` samples lost (True)."""
    rng = np.random.default_rng(seed)
    n_patches = -(-length // patch)
    lost = rng.permutation(n_patches) < round(ratio * n_patches)
    return np.repeat(lost, patch)[:length]


def available_isas() -> list[str]:
    """ISA variants this build can run on this CPU as this process sees it (valgrind hides AVX-512)."""
    try:
        from himae_stream.model import supported_isas
    except ImportError:
        return []
    return supported_isas()


def load(path: Path, isa: str, precision: str = "f32"):
    """Load `path` with its kernels forced to `isa`, its weights in `precision`.

    Raises NotImplementedError when the C core is not built or cannot run
    `isa` here, so a benchmark skips cleanly.
    """
    if isa not in available_isas():
        raise NotImplementedError(f"{isa}: not available (C core not built, or this CPU lacks it)")
    from himae_stream.model import load_model, supported_precisions

    if precision not in supported_precisions(isa):
        raise NotImplementedError(f"{precision} on {isa}: not available (this CPU has no such kernel)")
    return load_model(path, isa, precision=precision)


def p99_us(call: Callable[[], object], budget_s: float = 0.5, min_calls: int = 50,
           max_calls: int = 5000) -> float:
    """99th percentile of `call`'s wall time in µs, over as many calls as `budget_s` allows."""
    call()
    times: list[int] = []
    end = time.perf_counter() + budget_s
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() < end):
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    return float(np.percentile(times, 99)) / 1e3


class Counted(NamedTuple):
    """The call a workload counts, and what must run (uncounted) before each call, if anything."""

    call: Callable[[], object]
    before: Callable[[], object] | None = None


@dataclass(frozen=True)
class Workload:
    """One counted region: `prepare(model)` does all setup and returns what to count."""

    name: str
    config: str
    prepare: Callable[[object], Counted]
    precision: str = "f32"


def _encode(model) -> Counted:
    cfg = model.config
    x = signal(cfg["window"], cfg["fs"], cfg["in_channels"])
    return Counted(lambda: model.encode(x))


def _live_push(model) -> Counted:
    """The push of a live stream (packets of 4 samples, prepare() between them) that completes a
    deepest-level position: the path from a packet to its windows. Each count starts from the same
    prepared state, 10 s in."""
    cfg = model.config
    packet = 4
    x = signal(cfg["window"] + 1000, cfg["fs"], cfg["in_channels"])
    stream = model.stream(normalize=False)
    stride = stream.strides[-1]
    # the first packet end past 10 s at which the deepest level emits a position
    end = next(e for e in range(cfg["window"] + packet, x.shape[1], packet)
               if (e - stream.delay[-1] - 1) // stride > (e - packet - stream.delay[-1] - 1) // stride)

    def before() -> None:
        stream.reset()
        for start in range(0, end - packet, packet):
            stream.push(x[:, start : start + packet])
        stream.prepare()

    return Counted(lambda: stream.push(x[:, end - packet : end]), before)


def _stream_10s(model) -> Counted:
    """Ten pushes of 1 s each, after a window's worth of samples has filled every level."""
    cfg = model.config
    fs = int(cfg["fs"])
    stream = model.stream(normalize=False)
    stream.push(signal(cfg["window"], cfg["fs"], cfg["in_channels"]))
    seconds = [signal(fs, cfg["fs"], cfg["in_channels"], seed=i) for i in range(10)]

    def push_10s() -> None:
        for chunk in seconds:
            stream.push(chunk)

    return Counted(push_10s)


def _group_push(model) -> Counted:
    """One 1-s push into each of 16 streams pushed together (Model.streams), 10 s in: each conv runs once
    over all 16 streams' new positions. Each count starts from the same state."""
    cfg = model.config
    fs, n, window = int(cfg["fs"]), 16, cfg["window"]
    x = signal(window + fs, cfg["fs"], n)[:, None, :]  # (16, 1, 11 s): one channel per stream
    group = model.streams(n, normalize=False)

    def before() -> None:
        group.reset()
        group.push(x[..., :window])

    return Counted(lambda: group.push(x[..., window:]), before)


def _reconstruct(model) -> Counted:
    cfg = model.config
    x = signal(cfg["window"], cfg["fs"], cfg["in_channels"])
    mask = patch_mask(cfg["window"], cfg["patch_size"], cfg["mask_ratio"])
    return Counted(lambda: model.reconstruct(x, mask))


WORKLOADS = (
    Workload("encode himae-100", "himae-100", _encode),
    Workload("encode himae-25", "himae-25", _encode),
    Workload("stream 10 s himae-100", "himae-100", _stream_10s),
    Workload("live push himae-100", "himae-100", _live_push),
    Workload("reconstruct himae-100", "himae-100", _reconstruct),
    Workload("group push 16 himae-100", "himae-100", _group_push),
    Workload("live push himae-100 bf16", "himae-100", _live_push, "bf16"),
    Workload("group push 16 himae-100 bf16", "himae-100", _group_push, "bf16"),
    Workload("live push himae-100 bf16dot", "himae-100", _live_push, "bf16dot"),
    Workload("group push 16 himae-100 bf16dot", "himae-100", _group_push, "bf16dot"),
    Workload("live push himae-100 int8", "himae-100", _live_push, "int8"),
    Workload("group push 16 himae-100 int8", "himae-100", _group_push, "int8"),
)


def _marker(library: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library))
    lib.gate_end.argtypes = [ctypes.c_char_p]
    return lib


def main(argv: list[str] | None = None) -> int:
    """Count each workload under callgrind; print {"unavailable": bool} as JSON (true: this ISA cannot run here)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="folder of <config>-random0.himae files")
    parser.add_argument("--isa", required=True, choices=ISAS)
    parser.add_argument("--marker", type=Path, required=True, help="compiled gate_marker.c")
    parser.add_argument("--only", nargs="*", help="workload names to run (default: all)")
    args = parser.parse_args(argv)

    if args.isa not in available_isas():
        json.dump({"unavailable": True}, sys.stdout)
        return 0
    from himae_stream.model import supported_precisions

    here = supported_precisions(args.isa)  # bf16dot: AVX512-BF16; int8: AVX2, -VNNI; or the scalar kernel
    chosen = [w for w in WORKLOADS if (not args.only or w.name in args.only) and w.precision in here]
    models = {(name, precision): load(model_path(name, args.models), args.isa, precision)
              for name, precision in {(w.config, w.precision) for w in chosen}}
    runs = []
    for workload in chosen:
        counted = workload.prepare(models[workload.config, workload.precision])
        if counted.before:
            counted.before()
        counted.call()  # warm-up: first-call effects stay out of the count
        runs.append((workload.name, counted))

    marker = _marker(args.marker)
    marker.gate_instrument()
    for name, counted in runs:
        if counted.before:
            counted.before()
        marker.gate_begin()
        counted.call()
        marker.gate_end(name.encode())
    json.dump({"unavailable": False}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
