"""Simulator parts on their own: device clock and ADC, seeded faults, heart-rate traces,
`sim://` sources and the `himae sim` command line."""

import asyncio
import dataclasses

import numpy as np
import pytest
from conftest import BUNDLED

from firmware_sim.device import DeviceConfig, DeviceModel, DropLog, Pacer
from firmware_sim.faults import Fate, FaultConfig, Faults
from firmware_sim.heart_rate import estimate_trace, load_trace, trace_for, troika_trace_path
from himae_stream.cli import main as himae
from himae_stream.protocol import SampleFormat
from himae_stream.recordings import load
from himae_stream.samplestream import SampleStream
from himae_stream.urls import open_source


@pytest.fixture(scope="module")
def pleth():
    rec = load(BUNDLED, channels="PLETH")
    return dataclasses.replace(rec, signals=rec.signals[:, : 250 * 20])


def test_device_clock_jitter_and_quantisation(pleth):
    model = DeviceModel(pleth, DeviceConfig(jitter_us=500, seed=3, fs=125.0))
    assert model.fs == 125.0 and model.length == 2500  # resampled to the chosen rate
    t = model.timestamps_us(0, model.length)
    nominal = 1_000_000 + np.arange(model.length) * 8000
    assert np.all(np.diff(t) > 0)
    assert 300 < np.std(t - nominal) < 700 and np.abs(t - nominal).max() <= 0.45 * 8000
    assert np.array_equal(t, DeviceModel(pleth, DeviceConfig(jitter_us=500, seed=3, fs=125.0)).timestamps_us(0, 2500))
    codes = model.codes(0, model.length)
    assert codes.dtype == np.int32 and np.abs(codes).max() == int(round(0.9 * 32767))
    float32_rounding = 2.0**-23 * np.abs(model.recording.signals).max()
    assert np.abs(model.values(0, 2500) - model.recording.signals).max() <= model.scale[0] / 2 + float32_rounding


def test_device_stops_or_loops_at_the_end(pleth):
    once = DeviceModel(pleth)
    with pytest.raises(IndexError):
        once.codes(4990, 5010)
    looped = DeviceModel(pleth, DeviceConfig(loop=True))
    assert looped.length is None
    assert np.array_equal(looped.codes(4990, 5010), np.concatenate([once.codes(4990, 5000), once.codes(0, 10)], axis=1))


def test_pacer_applies_speed_and_drift():
    pacer = Pacer(speed=10.0, drift_ppm=1000.0)
    assert pacer.wall(10.0) - pacer.t0 == pytest.approx(1.0 / 1.001)
    unpaced = Pacer(speed=None)
    assert unpaced.wall(1e6) == unpaced.t0  # never waits
    with pytest.raises(ValueError):
        Pacer(speed=0.0)


def test_faults_are_seeded_and_respect_rates():
    config = FaultConfig(loss=0.05, burst=0.01, burst_len=8, duplicate=0.03, reorder=0.02, corrupt=0.04, seed=11)
    first, second = Faults(config), Faults(config)
    fates = [first.fate() for _ in range(20000)]
    assert fates == [second.fate() for _ in range(20000)]
    share = {f: fates.count(f) / len(fates) for f in Fate}
    assert 0.09 < share[Fate.LOSE] < 0.2  # independent loss plus bursts of ~8
    assert share[Fate.CORRUPT] == pytest.approx(0.04 * 0.87, rel=0.2)
    ble_only = Faults(config)
    assert {ble_only.fate(frozenset({Fate.SEND, Fate.LOSE})) for _ in range(2000)} == {Fate.SEND, Fate.LOSE}
    corrupted = Faults(config).corrupt(b"\x01\x02\x03\x04")
    assert corrupted != b"\x01\x02\x03\x04" and 0 not in corrupted
    window = Faults(FaultConfig(disconnect_after=30, disconnect_for=5))
    assert [window.disconnected(t) for t in (29.9, 30.0, 34.9, 35.0)] == [False, True, True, False]
    with pytest.raises(ValueError):
        FaultConfig(loss=1.5)


def test_drop_log_merges_runs_and_counts():
    log = DropLog()
    log.drop(0, 10, "lost")
    log.drop(10, 20, "lost")
    log.drop(30, 35, "corrupted")
    log.drop(35, 35, "lost")
    assert log.dropped == [(0, 20, "lost"), (30, 35, "corrupted")]
    assert log.total() == 25 and log.counters == {"dropped_lost": 20, "dropped_corrupted": 5}
    assert np.array_equal(log.indices(), np.r_[0:20, 30:35])


def test_heart_rate_traces(data_dir):
    path = data_dir / "troika" / "Training_data" / "DATA_03_TYPE02.mat"
    assert troika_trace_path(path) == path.with_name("DATA_03_TYPE02_BPMtrace.mat")
    rec = load(path)
    reference = trace_for(rec)
    assert np.array_equal(reference.bpm, load_trace(path.with_name("DATA_03_TYPE02_BPMtrace.mat")).bpm)
    assert reference.times_s[:3].tolist() == [4.0, 6.0, 8.0]
    assert reference.at(5.0) == round((reference.bpm[0] + reference.bpm[1]) / 2)
    # at rest (the first 30 s) the PPG spectral peak agrees with the ECG-derived reference
    estimate = estimate_trace(rec.pick("PPG1"))
    assert np.median(np.abs(estimate.bpm[:10] - reference.bpm[:10])) < 5


@pytest.mark.parametrize("transport", ["serial", "ble"])
def test_sim_url_source_runs_device_and_reader(transport):
    url = (f"sim://{BUNDLED}?channels=PLETH&duration=10&speed=max"
           f"&transport={transport}&loss=0.02&seed=2&format=int24")

    async def main():
        source = open_source(url)
        stream = SampleStream(source)
        chunks = [chunk async for chunk in stream]
        return source, stream, chunks

    source, stream, chunks = asyncio.run(main())
    lost = np.concatenate([c.lost_mask for c in chunks])
    assert source.model.fmt == SampleFormat.INT24 and source.model.length == 2500
    assert stream.counters["lost_samples"] == lost.sum() > 0
    dropped = source.device.log.indices()
    assert np.array_equal(np.flatnonzero(lost) + chunks[0].start, dropped[dropped < chunks[0].start + lost.size])


def test_cli_rejects_bad_arguments(capsys):
    path = str(BUNDLED)
    assert himae(["sim", "--recording", path, "--speed", "-2"]) == 2
    assert "--speed: expected a number > 0 or 'max', got '-2'" in capsys.readouterr().err
    assert himae(["sim", "--recording", path, "--channels", "NOPE"]) == 2
    assert "no channel matches 'NOPE'" in capsys.readouterr().err
    assert himae(["sim", "--recording", path, "--loss", "2"]) == 2
    assert "--loss: expected a number from 0 to 1, got '2'" in capsys.readouterr().err
    assert himae(["sim", "--recording", path, "--transport", "ble", "--hci", "nowhere"]) == 2
    assert "--hci must be HOST:PORT" in capsys.readouterr().err
