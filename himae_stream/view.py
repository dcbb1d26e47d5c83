"""What `himae run`'s live view shows: one record and the run's status as a rich table.

Numbers are rounded and carry their units (`104 bpm`), a class comes with
its probability (`rest 93 %`), and a source that runs faster than real time
(a replay) shows its speed (`×20 replay`) rather than a clock drift no
crystal could have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: A device clock this far off the host's is a replay at another speed, not a drifting crystal (ppm).
REPLAY_PPM = 10_000
#: How model files name units, as the view writes them, and the decimals worth showing.
UNITS = {"BPM": ("bpm", 0)}


@dataclass
class Status:
    """The run as the live view shows it beside the last record."""

    windows: int
    latency_ms: tuple[float, float] | None  # p50, p99; None before the first window
    device_fs: float | None
    model_fs: float
    received_per_s: float
    drift_ppm: float
    counters: dict[str, int] = field(default_factory=dict)
    units: dict[str, str | None] = field(default_factory=dict)  # per prediction, from the model's heads


def clock(drift_ppm: float) -> str:
    """The device clock against the host's: a drift in ppm, or the speed of a replay."""
    if abs(drift_ppm) < REPLAY_PPM:
        return f"clock drift {drift_ppm:+.0f} ppm"
    return f"×{1 + drift_ppm * 1e-6:.3g} replay"


def prediction(name: str, predictions: dict, unit: str | None) -> str:
    """One prediction as text: a class with its probability, or a number rounded, with its unit."""
    value = predictions[name]
    if isinstance(value, str):
        p = (predictions.get(f"{name}_p") or {}).get(value)
        return value if p is None else f"{value} {100 * p:.0f} %"
    if value is None:
        return "—"
    label, decimals = UNITS.get(unit, (unit, 2))
    return f"{value:.{decimals}f}" + (f" {label}" if label else "")


def table(source: str, record: dict, status: Status):
    """The live view's table for the latest record."""
    from rich.table import Table

    view = Table(title="himae run", show_header=False, expand=False)
    view.add_column(style="bold")
    view.add_column()
    view.add_row("source", source)
    view.add_row("rate", f"device {status.device_fs or 0:g} Hz, received {status.received_per_s:.1f} samples/s, "
                         f"model {status.model_fs:g} Hz, {clock(status.drift_ppm)}")
    view.add_row("counters", ", ".join(f"{k} {v}" for k, v in status.counters.items() if v) or "all zero")
    latency = status.latency_ms
    view.add_row("latency", f"p50 {latency[0]:.3f} ms, p99 {latency[1]:.3f} ms" if latency else "no windows yet")
    view.add_row("windows", f"{status.windows} (lost {record['lost_fraction']:.1%} in the last)")
    predictions = record["predictions"]
    for name in predictions:
        if not (name.endswith("_p") and name[:-2] in predictions):  # probabilities go with their class
            view.add_row(name.replace("_", " "), prediction(name, predictions, status.units.get(name)))
    norms = [float(np.linalg.norm(e)) for e in record["embeddings"]]
    view.add_row("level norms", "  ".join(f"L{l} {n:.2f}" for l, n in enumerate(norms)))
    return view
