"""`himae run`: any live source through the model into sinks, with a live view on a terminal.

With no arguments it replays the bundled PhysioNet record (finger PPG) through
the device simulator over a pseudo-terminal serial port, in real time, into
the shipped default model.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from himae_stream.stream import to_samples


def default_source(speed: str) -> str:
    from himae_stream.recordings import DEMO

    return f"sim://{DEMO}?channels=PLETH&transport=serial&speed={speed}&baud=921600"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="source URL: serial://, ble://, file://, sim://PATH?speed=10&loss=0.02 "
                   "(default: the bundled recording through the simulator)")
    p.add_argument("--model", default="himae-100", help="model file or shipped model name (default himae-100)")
    p.add_argument("--sink", action="append", default=[],
                   help="jsonl://-, jsonl://FILE, csv://FILE, npz://FILE, lsl://NAME (repeatable; "
                        "default jsonl://- when stdout is not a terminal)")
    p.add_argument("--window", help="window length, e.g. 10s (default: the one the model's probe heads were "
                                    "fitted on, else the model's)")
    p.add_argument("--hop", default="1s", help="hop between windows (default 1s)")
    p.add_argument("--duration", help="stop after this much signal, e.g. 60s (default: until the source ends)")
    p.add_argument("--speed", default="1", help="replay speed of the default simulator source (default 1, 'max')")
    p.add_argument("--channels", help="device channel(s) the model reads, by name or glob")
    p.add_argument("--no-impute", action="store_true", help="do not fill gaps")


def run(args: argparse.Namespace) -> int:
    from himae_stream.pipeline import load
    from himae_stream.sinks import open_sink
    from himae_stream.urls import parse_source_url

    source = args.source or default_source(args.speed)
    parse_source_url(source)  # a bad URL fails before anything starts
    model = load(args.model)
    duration = None if args.duration is None else to_samples(args.duration, model.config["fs"], "duration") / model.config["fs"]
    live = sys.stdout.isatty() and not args.sink
    sinks = [open_sink(url) for url in (args.sink or ([] if live else ["jsonl://-"]))]
    state: list = []
    try:
        asyncio.run(_drive(source, model, args, duration, sinks, state, live))
    except KeyboardInterrupt:
        pass  # a clean stop: sinks are flushed and the summary printed below
    finally:
        for sink in sinks:
            sink.close()
    if state:
        print(_summary(state[0], state[1]), file=sys.stderr)
    return 0


async def _drive(source, model, args, duration, sinks, state, live) -> None:
    from himae_stream.pipeline import run as run_pipeline

    view = LiveView(source, state) if live else None
    try:
        if view:
            view.start()
        async for record in run_pipeline(source, model, args.window, args.hop, channels=args.channels,
                                         impute=not args.no_impute, duration=duration, pipeline=state):
            for sink in sinks:
                sink.write(record)
            if view:
                view.update(record)
    finally:
        if view:
            view.stop()


def _summary(pipeline, samples) -> str:
    p50, p99 = pipeline.latency_percentiles()
    counters = samples.counters
    lost = counters.get("lost_samples", 0)
    return (
        f"himae run: {pipeline.windows} windows, {pipeline.stream.pushed} samples, "
        f"lost {lost}, imputed {pipeline.imputed}, crc errors {counters.get('crc_errors', 0)}, "
        f"reconnects {counters.get('reconnects', 0)}, latency p50 {p50:.3f} ms p99 {p99:.3f} ms"
    )


class LiveView:
    """A rich table redrawn a few times a second: rates, counters, latency, predictions, norms."""

    def __init__(self, source: str, state: list):
        from rich.live import Live

        self.source, self.state = source, state
        self.live = Live(refresh_per_second=4, transient=False)
        self.first: tuple[float, int] | None = None  # (time, device samples) at the first record
        self.last: dict | None = None

    def start(self) -> None:
        self.live.start()

    def stop(self) -> None:
        self.live.stop()

    def update(self, record: dict) -> None:
        self.last = record
        self.live.update(self._table())

    def _table(self):
        import numpy as np
        from rich.table import Table

        pipeline, samples = self.state
        counters = samples.counters
        now, received = time.monotonic(), counters.get("samples", 0)
        self.first = self.first or (now, received)
        rate = (received - self.first[1]) / max(now - self.first[0], 1e-9)
        p50, p99 = pipeline.latency_percentiles()
        table = Table(title="himae run", show_header=False, expand=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("source", self.source)
        table.add_row("rate", f"device {pipeline.device_fs or 0:g} Hz, received {rate:.1f} samples/s, "
                              f"model {pipeline.fs:g} Hz, clock drift {samples.drift_ppm:+.0f} ppm")
        table.add_row("counters", ", ".join(f"{k} {v}" for k, v in counters.items() if v) or "all zero")
        table.add_row("latency", f"p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        table.add_row("windows", f"{pipeline.windows} (lost {self.last['lost_fraction']:.1%} in the last)")
        for name, value in self.last["predictions"].items():
            table.add_row(name, str(value))
        norms = [float(np.linalg.norm(e)) for e in self.last["embeddings"]]
        table.add_row("level norms", "  ".join(f"L{l} {n:.2f}" for l, n in enumerate(norms)))
        return table
