"""What people read: the live view of `himae run` (rendered to text) and the figure of `himae plot`
(inspected as a matplotlib Figure): rounded numbers with units, classes with their probability,
one axis per quantity, each labelled."""

import numpy as np
import pytest

from himae_stream.view import Status, table

BUNDLED = "himae_stream/data/a103l.hea"

#: the README's example record
RECORD = {
    "window": 0, "start": 0, "end": 800, "t_start": 1795795632.187489, "t_end": 1795795633.053376,
    "lost_fraction": 0.0,
    "predictions": {"heart_rate": 104.25728467747636, "activity": "rest",
                    "activity_p": {"rest": 0.926, "moderate": 0.064, "fast": 0.01}, "quality": -1.42812345},
    "embeddings": [np.full(c, 0.5, np.float32) for c in (16, 32, 64, 128, 256)],
    "imputed": 0, "latency_ms": 0.6449,
}


def rendered(drift_ppm: float, windows: int = 12) -> dict[str, str]:
    """The live view as text, row by row: {label: value}."""
    from rich.console import Console

    status = Status(windows=windows, latency_ms=(0.4912, 0.7001) if windows else None, device_fs=250.0,
                    model_fs=100.0, received_per_s=250.4, drift_ppm=drift_ppm, counters={"frames": 300},
                    units={"heart_rate": "BPM", "quality": "log10 masked-reconstruction MSE"})
    console = Console(record=True, width=160)
    console.print(table("sim://a103l.hea?speed=20", RECORD, status))
    cells = [line.split("│")[1:3] for line in console.export_text().splitlines() if line.count("│") == 3]
    return {label.strip(): value.strip() for label, value in cells}


def test_live_view_rounds_numbers_and_gives_units_and_class_probability():
    rows = rendered(drift_ppm=12.4)
    assert rows["heart rate"] == "104 bpm"
    assert rows["activity"] == "rest 93 %"
    assert rows["quality"] == "-1.43 log10 masked-reconstruction MSE"
    assert "activity_p" not in rows and "activity p" not in rows, "probabilities go with their class"
    assert rows["rate"].endswith("clock drift +12 ppm") and rows["latency"] == "p50 0.491 ms, p99 0.700 ms"


def test_live_view_shows_a_replay_as_its_speed_not_as_clock_drift():
    rate = rendered(drift_ppm=19e6)["rate"]  # the device clock runs 20 times as fast as the host's
    assert rate.endswith("×20 replay") and "ppm" not in rate


def test_live_view_before_the_first_window():
    assert rendered(drift_ppm=0.0, windows=0)["latency"] == "no windows yet"


@pytest.fixture(scope="module")
def plot():
    pytest.importorskip("matplotlib")
    from himae_stream.commands.plot import figure

    return figure(BUNDLED, model="himae-100", channels="PLETH", length="20s")


def test_plot_gives_each_quantity_its_own_labelled_axis(plot):
    fig, gaps, samples = plot
    axes = fig.axes
    labels = [ax.get_ylabel() for ax in axes]
    # one axis per head in the model's default records (the others lost to their classical
    # baselines on data they never saw and stay out)
    from himae_stream import modelfile, probes, zoo

    default = [h["name"] for h in modelfile.read(zoo.resolve("himae-100")).meta["probes"] if probes.is_default(h)]
    assert labels[:2] == ["PLETH (recording units)", "heart rate\n(bpm)"] and len(labels) == 1 + len(default)
    assert axes[-1].get_xlabel() == "time (s)"
    assert [len(ax.get_lines()) for ax in axes] == [2] + [1] * len(default), "one quantity per prediction axis"
    heart_rate = axes[1].get_lines()[0].get_ydata()
    rated = heart_rate[np.isfinite(heart_rate)]  # withheld (NaN) where the cut gaps leave the quality head in doubt
    assert len(heart_rate) == 13 and rated.size >= 5 and np.all((30 < rated) & (rated < 220))
    withheld = [text.get_text() for text in axes[1].texts]
    assert withheld == ([f"withheld in {13 - rated.size} of 13 windows (quality below 0.5)"] if rated.size < 13 else [])
    assert gaps == 3 and samples == 300
    assert not any(ax.images for ax in axes), "no heatmap without a colour bar"
