"""Lab Streaming Layer end to end on loopback (tests/lsl_api.cfg): the simulator's outlet →
LslSource → SampleStream, sample by sample against the recording and the simulator's drop log;
`himae run --source lsl://...` against the same recording over sim://; a vanishing stream."""

import asyncio
import subprocess
import sys

import numpy as np
import pytest
from test_run import assert_same_records
from test_sim_serial import check_delivery, first_seconds

from firmware_sim.device import DeviceConfig, DeviceModel
from firmware_sim.faults import FaultConfig, Faults
from himae_stream.sources.base import SourceError
from himae_stream.sources.lsl import LslSource
from waiting import in_thread, read_all

pylsl = pytest.importorskip("pylsl", reason="needs pylsl (with its bundled liblsl): pip install '.[test]'")
from firmware_sim.lsl_device import LslDevice  # noqa: E402

BUNDLED = "himae_stream/data/a103l.hea"


async def replay(device: LslDevice, name: str, timeout_s: float = 60.0):
    """Read the device's stream until every sample it pushed was read."""
    source = LslSource(name, timeout_s=timeout_s)
    device.start()
    sent = in_thread(device.wait, timeout_s, "the device to push the whole recording")
    return await read_all(source, [sent], lambda: device.pushed, lambda: source.counters["samples_read"], timeout_s,
                          "every sample pushed")


def device(seconds, name, speed, **faults):
    model = DeviceModel(first_seconds(seconds), DeviceConfig(name=name))
    return LslDevice(model, Faults(FaultConfig(seed=5, **faults)), speed=speed)


@pytest.mark.parametrize("speed", [1.0, None], ids=["1x", "max"])
def test_lsl_replay_delivers_every_sample_or_counts_it_lost(speed):
    """Seeded lost frames show as timestamp jumps, counted lost exactly where the drop log says."""
    with device(3 if speed else 20, f"himae-lsl-{speed}", speed, loss=0.05) as sim:
        stream, tap, chunks = asyncio.run(replay(sim, sim.name))
    lost = check_delivery(chunks, sim.model, sim.log.indices())
    assert sim.log.counters["dropped_lost"] > 0 and stream.counters["lost_samples"] == lost.sum() > 0
    assert stream.counters["timestamp_jumps"] == stream.counters["gaps"]
    assert tap.info.channel_names == ("PLETH",) and tap.info.fs == 250.0
    if speed == 1.0:  # the outlet's clock is this machine's: host times are the LSL times (+ transport delay)
        times = np.concatenate([c.timestamps for c in chunks])
        arrival = chunks[-1].arrival
        assert 0 <= arrival - times[-1] < 0.5  # no sample timed after it arrived


def test_a_stream_that_vanishes_comes_back_and_the_samples_meanwhile_are_lost():
    with device(12, "himae-lsl-vanish", 2.0, disconnect_after=2.0, disconnect_for=5.0) as sim:
        stream, tap, chunks = asyncio.run(replay(sim, sim.name))
    lost = check_delivery(chunks, sim.model, sim.log.indices())
    assert sim.log.counters["dropped_disconnected"] > 0
    assert lost.sum() == stream.counters["lost_samples"] >= sim.log.counters["dropped_disconnected"]
    assert not lost[-1], "the stream came back"


def test_a_stream_gone_for_good_is_a_one_line_error():
    async def main():
        with device(60, "himae-lsl-gone", 1.0) as sim:
            source = LslSource(sim.name, timeout_s=1.0)
            sim.start()
            got = []
            async for received in source:
                got.append(received)
                if len(got) == 3:
                    sim.close()  # the outlet is destroyed: the stream vanishes for good
        return got

    with pytest.raises(SourceError, match="sent nothing for 1 s"):
        asyncio.run(asyncio.wait_for(main(), 30))


def test_no_such_stream_and_irregular_streams_are_refused(himae):
    result = himae("run", "--source", "lsl://no-such-stream?timeout=0.5", "--duration", "20s", timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no LSL stream with name 'no-such-stream' found within 0.5 s" in result.stderr

    info = pylsl.StreamInfo("himae-markers", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_float32, "m1")
    outlet = pylsl.StreamOutlet(info)

    async def read():
        async for _ in LslSource("himae-markers", timeout_s=5):
            pass

    with pytest.raises(SourceError, match="irregular rate"):
        asyncio.run(read())
    del outlet


def test_run_from_lsl_writes_the_records_of_the_same_recording_over_sim(tmp_path, random_model_file, himae):
    model_file = random_model_file("himae-100")
    sim = subprocess.Popen(
        [sys.executable, "-m", "himae_stream.cli", "sim", "--device", "lsl", "--recording", BUNDLED,
         "--channels", "PLETH", "--duration", "14", "--speed", "max", "--name", "himae-sim-run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert "lsl: name=himae-sim-run" in sim.stdout.readline()
        out = tmp_path / "lsl.jsonl"
        result = himae("run", "--model", model_file, "--source", "lsl://himae-sim-run?timeout=20",
                       "--duration", "12s", "--sink", f"jsonl://{out}")
        assert result.returncode == 0, result.stderr
    finally:
        sim.kill()
        sim.wait()
    want = tmp_path / "sim.jsonl"
    result = himae("run", "--model", model_file, "--source", f"sim://{BUNDLED}?channels=PLETH&speed=max",
                   "--duration", "12s", "--sink", f"jsonl://{want}")
    assert result.returncode == 0, result.stderr
    assert_same_records(out, want, 3, rtol=1e-4, atol=1e-5)
