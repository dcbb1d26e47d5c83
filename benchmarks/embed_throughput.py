"""`himae embed` over a folder of recordings: signal seconds embedded per CPU second of the whole command.

Runs the command itself (`himae_stream.cli.main(["embed", ...])`: reading each
file, picking its PPG channel, resampling to the model's rate, the encoder in
stream or window mode, writing the NPZ) once per model, mode and weight
precision, in this process on one thread, and divides the recordings' total
duration by the process CPU time the command took (wall time beside it).
Target: >= 50,000x real time per core. A script, not a test: nothing here
fails a build.

    python -m benchmarks.embed_throughput --files '../shared/data/StressPredict_E4/*.npz' \\
        [--models himae-100,himae-25] [--modes stream,window] [--precision f32,bf16,bf16dot,int8]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import io
import tempfile
import time
from pathlib import Path

from benchmarks import peers


def signal_seconds(files: list[str]) -> float:
    """Total duration of the recordings, as `himae embed` reads them."""
    from himae_stream import recordings

    return sum(recordings.load(f).duration_s for f in files)


def embed_cost(files: list[str], model: str, mode: str, precision: str) -> tuple[float, float]:
    """(CPU s, wall s) of one `himae embed` over `files`; the output goes to a temporary file."""
    from himae_stream.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["embed", *files, "-o", str(Path(tmp) / "e.npz"), "--model", model, "--mode", mode,
                "--precision", precision]
        cpu, wall = time.process_time(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if rc != 0:
        raise SystemExit(f"himae embed failed ({rc}): {' '.join(argv)}")
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", required=True, help="glob of recordings (quote it)")
    parser.add_argument("--models", default="himae-100,himae-25")
    parser.add_argument("--modes", default="stream,window")
    parser.add_argument("--precision", default="f32,bf16,bf16dot,int8")
    args = parser.parse_args()
    files = sorted(glob.glob(args.files))
    if not files:
        raise SystemExit(f"no recordings match {args.files}")
    seconds = signal_seconds(files)
    timed = peers.precisions(args.precision)
    print(f"## `himae embed` throughput, {datetime.date.today().isoformat()}\n")
    print(f"CPU: {peers.cpu_model()}; one process, one thread; {len(files)} recordings, {seconds / 3600:.2f} h of "
          "signal; the whole command (read, resample, encode, write), after one warm-up run.\n")
    print("| model | mode | weights | CPU s | wall s | real time per CPU second |\n|---|---|---|---:|---:|---:|")
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            for precision in timed:
                embed_cost(files[:1], model, mode, precision)  # compiles and caches what a first run does
                cpu, wall = embed_cost(files, model, mode, precision)
                print(f"| {model} | {mode} | {precision} | {cpu:.1f} | {wall:.1f} | {seconds / cpu:,.0f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
