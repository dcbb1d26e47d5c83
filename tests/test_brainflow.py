"""BrainFlow end to end: a real recording written as a playback file, replayed by BrainFlow's
PLAYBACK_FILE_BOARD through BrainFlowSource, against the recording and against sim://; boards
that cannot be read are one-line errors."""

import asyncio

import numpy as np
import pytest
from test_run import assert_same_records
from test_sim_serial import first_seconds

from firmware_sim.device import DeviceModel
from waiting import read_all

pytest.importorskip("brainflow", reason="needs brainflow: pip install '.[test]'")
from firmware_sim.brainflow_playback import write_playback  # noqa: E402
from himae_stream.urls import open_source  # noqa: E402

BUNDLED = "himae_stream/data/a103l.hea"


def test_playback_delivers_the_recording_sample_by_sample(tmp_path):
    model = DeviceModel(first_seconds(2))
    url = write_playback(model, tmp_path / "rec.csv")

    async def main():
        source = open_source(url)
        return await read_all(source, [], lambda: model.length, lambda: source.counters["rows"], 30,
                              "every row of the file")

    stream, tap, chunks = asyncio.run(main())
    values = np.concatenate([c.samples for c in chunks], axis=1)
    assert sum(len(c) for c in chunks) == model.length and stream.counters["lost_samples"] == 0
    assert tap.info.channel_names == ("PPG0", "PPG1") and tap.info.fs == 250
    # the file holds 6 decimals: the recording within that
    np.testing.assert_allclose(values[0], model.values(0, model.length)[0], atol=1e-6)
    assert not values[1].any()
    times = np.concatenate([c.timestamps for c in chunks])
    assert np.all(np.diff(times) > 0) and 0 <= chunks[-1].arrival - times[-1] < 0.5  # host clock


def test_run_from_playback_writes_the_records_of_the_same_recording_over_sim(tmp_path, random_model_file, himae):
    model_file = random_model_file("himae-100")
    made = himae("sim", "--device", "brainflow-playback", "--recording", BUNDLED, "--channels", "PLETH",
                 "--duration", "11", "--out", str(tmp_path / "rec.csv"))
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip().split("source: ")[-1]
    out, want = tmp_path / "bf.jsonl", tmp_path / "sim.jsonl"
    result = himae("run", "--model", model_file, "--source", url, "--duration", "10.2s", "--sink", f"jsonl://{out}")
    assert result.returncode == 0, result.stderr
    result = himae("run", "--model", model_file, "--source", f"sim://{BUNDLED}?channels=PLETH&speed=max",
                   "--duration", "10.2s", "--sink", f"jsonl://{want}")
    assert result.returncode == 0, result.stderr
    assert_same_records(out, want, 1, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("source, message", [
    ("brainflow://playback?file=/nonexistent/rec.csv&master_board=synthetic",
     "cannot start BrainFlow board PLAYBACK_FILE_BOARD"),
    ("brainflow://muse_2_bled?serial_port=/nonexistent/tty", "cannot start BrainFlow board MUSE_2_BLED_BOARD"),
    ("brainflow://cyton?serial_port=/dev/ttyUSB0", "CYTON_BOARD has no PPG channel"),
    ("brainflow://no_such_board", "unknown BrainFlow board 'no_such_board'"),
    ("brainflow://playback?file=x.csv", "needs master_board="),
])
def test_boards_that_cannot_be_read_are_one_line_exit_2(source, message, himae):
    result = himae("run", "--source", source, "--duration", "20s", timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
