"""`himae run`: any live source through the model into sinks, with a live view on a terminal.

With no arguments it replays the bundled PhysioNet record (finger PPG) through
the device simulator over a pseudo-terminal serial port, in real time, into
the shipped default model; `--source PATH` replays any recording the same way.

Exit codes: 0 when the run produced windows and ended (source over or
`--duration` reached), 130 after Ctrl-C (the summary printed, the sinks
written), 2 on an error, including a run that could not produce a window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

from himae_stream.commands import add_positional, add_precision_argument
from himae_stream.numbers import SAMPLE_RATE, SPEED
from himae_stream.recordings import RECORDING_KINDS
from himae_stream.stream import to_samples


#: `--speed` not given (`--speed max` parses to None, as fast as the transport takes); not a string,
#: so argparse leaves the default as it is
UNSET = object()


def default_source(speed: float | None, fs: float | None = None) -> str:
    from himae_stream.recordings import DEMO
    from himae_stream.urls import replay_url

    return replay_url(str(DEMO), speed, "PLETH", fs)


def source_url(args: argparse.Namespace) -> str:
    """The URL a run reads: `--source` (a URL, or a recording's path, replayed like the bundled one),
    or the bundled record, either at `--speed` (default 1) by a device at `--fs`."""
    from himae_stream.cli import CliError
    from himae_stream.urls import as_source_url

    source, speed = args.source, 1.0 if args.speed is UNSET else args.speed
    if source is not None and not source.strip():  # e.g. an unset shell variable: not the demo
        raise CliError("--source is empty (leave it out to replay the bundled recording)")
    if source is None:
        return default_source(speed, args.fs)
    for given, name, example in ((args.speed is not UNSET, "--speed", "speed=10"), (args.fs, "--fs", "fs=64")):
        if "://" in source and given:
            raise CliError(f"{name} is for a recording given by its path; give a URL's in the URL "
                           f"(sim://...?{example})")
    return as_source_url(source, speed, args.fs)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_positional(p, "--source")
    p.add_argument("--source", help="source URL: serial://, ble://, file://, sim://PATH?speed=10&loss=0.02; or a "
                   f"recording's path ({RECORDING_KINDS}), replayed through the simulator at --speed "
                   "(default: the bundled recording, the same way)")
    p.add_argument("--model", default="himae-100", help="model file or shipped model name (default himae-100)")
    p.add_argument("-o", "--sink", action="append", default=[], metavar="SINK",
                   help="where records go: a file (out.jsonl, out.csv, out.npz) or a URL: jsonl://-, "
                        "jsonl://FILE, csv://FILE, npz://FILE, lsl://NAME; ?mode=append for jsonl and csv files "
                        "(repeatable; default jsonl://- when stdout is not a terminal)")
    p.add_argument("--window", help="window length, e.g. 10s (default: the one the model's probe heads were "
                                    "fitted on, else the model's)")
    p.add_argument("--hop", default="1s", help="hop between windows (default 1s)")
    p.add_argument("--duration", help="stop after this much signal, e.g. 60s (default: until the source ends)")
    p.add_argument("--speed", type=SPEED, default=UNSET,
                   help="replay speed of a recording: the bundled one or --source PATH (default 1: real "
                        "time; 'max': as fast as it runs)")
    p.add_argument("--fs", type=SAMPLE_RATE,
                   help="sample rate (Hz) of a recording given by its path that states none (a bare .npy, "
                        "columns of numbers); for one that does, the rate its simulated device sends at")
    p.add_argument("--channels", help="device channel(s) the model reads, by name or glob")
    p.add_argument("--no-impute", action="store_true", help="do not fill gaps")
    add_precision_argument(p)
    p.add_argument("--all-heads", action="store_true",
                   help="also predict with heads kept out of default records (on data they never saw, they "
                        "lost to a classical baseline or did no better than a coin; `himae info MODEL` says why)")


def run(args: argparse.Namespace) -> int:
    from himae_stream.cli import CliError
    from himae_stream.pipeline import default_window, load
    from himae_stream.sinks import open_sink
    from himae_stream.urls import open_source

    url = source_url(args)
    source = open_source(url)  # a bad URL or recording fails before anything starts
    model = load(args.model, args.precision)
    fs = model.config["fs"]
    window = to_samples(args.window or default_window(model), fs, "--window")
    hop = to_samples(args.hop, fs, "--hop")
    duration = None if args.duration is None else to_samples(args.duration, fs, "--duration") / fs
    if duration is not None and duration * fs < window:
        raise CliError(f"--duration {duration:g} s is shorter than the {window / fs:g} s window "
                       f"({_window_origin(args)}): no window could complete")
    fitted = default_window(model)
    if args.window and model.metadata.get("probes") and abs(window / fs - fitted) > 0.5 / fs:
        print(f"himae run: note: the probe heads were fitted on {fitted:g}-s windows; their predictions on "
              f"{window / fs:g}-s windows are not validated (leave --window out for {fitted:g} s)", file=sys.stderr)
    live = sys.stdout.isatty() and not args.sink
    # checked now, created with the first record: a source that fails leaves every file as it was
    sinks = [open_sink(u) for u in (args.sink or ([] if live else ["jsonl://-"]))]
    state: list = []
    stopped: BaseException | None = None
    try:
        asyncio.run(_drive(source, url, model, window, hop, duration, args, sinks, state, live))
    except (KeyboardInterrupt, BrokenPipeError) as exc:
        stopped = exc  # Ctrl-C, or the reader of stdout left (`| head`): clean stops, what was written is kept
    except BaseException:
        _abort(sinks)
        raise
    windows = state[0].windows if state else 0
    if not windows and stopped is None:
        _abort(sinks)
        raise CliError(_why_no_window(url, state, window / fs, args))
    for sink in sinks:  # a stopped run without windows has nothing to put in place of the user's files
        if windows:
            sink.close()
        else:
            sink.abort()
    if isinstance(stopped, BrokenPipeError):
        raise stopped  # the command line ends it quietly
    print(_summary(*state) if state else "himae run: no windows", file=sys.stderr)
    return 130 if stopped else 0


async def _drive(source, url, model, window, hop, duration, args, sinks, state, live) -> None:
    from himae_stream.pipeline import run as run_pipeline

    view = LiveView(url, state) if live else None
    try:
        if view:
            view.start()
        records = run_pipeline(source, model, window, hop, channels=args.channels, impute=not args.no_impute,
                               all_heads=args.all_heads, duration=duration, pipeline=state,
                               quiet_gc=True)
        # a sink that fails (the reader of stdout left) closes the pipeline and its source at once
        async with contextlib.aclosing(records):
            async for record in records:
                for sink in sinks:
                    sink.write(record)
                if view:
                    view.update(record)
    finally:
        if view:
            view.stop()


def _abort(sinks) -> None:
    """A failed run: every target stays as it was; say where the windows written so far are kept."""
    for sink in sinks:
        kept = sink.abort()
        if kept is not None:
            print(f"himae run: the windows written before the failure are in {kept}", file=sys.stderr)


def _window_origin(args) -> str:
    return "--window" if args.window else "the default; set --window"


def _why_no_window(url: str, state: list, window_s: float, args) -> str:
    """Why a run that ended by itself produced no window: the source's signal, or its options."""
    pipeline, samples = state or (None, None)
    if pipeline is None or pipeline.stream.pushed == 0:
        return f"{url}: {_nothing_decoded(samples.counters if samples else {})}"
    return (f"the source ended after {pipeline.stream.pushed / pipeline.fs:g} s of signal, shorter than the "
            f"{window_s:g} s window ({_window_origin(args)}): no window could complete")


def _nothing_decoded(counters: dict) -> str:
    """What a source that gave no samples delivered: bytes read, frames (or text lines) decoded and
    dropped, by reason."""
    read = f" from {counters['bytes']} bytes read" if "bytes" in counters else ""
    unit = "lines" if "lines" in counters else "frames"
    dropped = {k: counters.get(k, 0) for k in ("crc_errors", "decode_errors", "oversize", "malformed",
                                                 "garbage_lines", "bad_columns", "long_lines")}
    reasons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dropped.items() if v)
    return (f"no samples decoded{read}: {counters.get(unit, 0)} {unit}, {sum(dropped.values())} dropped"
            + (f" ({reasons})" if reasons else ""))


def _summary(pipeline, samples) -> str:
    counters = samples.counters
    if pipeline.windows:
        p50, p99 = pipeline.latency_percentiles()
        windows = f"{pipeline.windows} window{'s' if pipeline.windows > 1 else ''}"
        latency = f", latency p50 {p50:.3f} ms p99 {p99:.3f} ms"
    else:
        windows, latency = "no windows", ""
    return (
        f"himae run: {windows}, {pipeline.stream.pushed} samples, lost {counters.get('lost_samples', 0)}, "
        f"imputed {pipeline.imputed}{' (at the model rate)' if pipeline.resampler is not None else ''}, "
        + _broken(counters)
        + f"reconnects {counters.get('reconnects', 0)}{latency}"
    )


def _broken(counters: dict) -> str:
    """What the transport found broken: packets changed on the way for a source that counts them (a
    Shimmer's, which carry no CRC), else frames failing their CRC."""
    if "damaged" in counters:
        return f"damaged packets {counters['damaged']}, "
    return f"crc errors {counters.get('crc_errors', 0)}, "


class LiveView:
    """A rich table redrawn a few times a second: rates, counters, latency, predictions, norms."""

    def __init__(self, source: str, state: list):
        from rich.live import Live

        self.source, self.state = source, state
        self.live = Live(refresh_per_second=4, transient=False)
        self.first: tuple[float, int] | None = None  # (time, device samples) at the first record

    def start(self) -> None:
        self.live.start()

    def stop(self) -> None:
        self.live.stop()

    def update(self, record: dict) -> None:
        from himae_stream.view import Status, table

        pipeline, samples = self.state
        counters = samples.counters
        now, received = time.monotonic(), counters.get("samples", 0)
        self.first = self.first or (now, received)
        status = Status(
            windows=pipeline.windows, latency_ms=pipeline.latency_percentiles() if pipeline.windows else None,
            device_fs=pipeline.device_fs, model_fs=pipeline.fs,
            received_per_s=(received - self.first[1]) / max(now - self.first[0], 1e-9),
            drift_ppm=samples.drift_ppm, counters=counters,
            units={h["name"]: h.get("unit") for h in pipeline.heads},
        )
        self.live.update(table(self.source, record, status))
