"""BrainFlow end to end: a real recording written as a playback file, replayed by BrainFlow's
PLAYBACK_FILE_BOARD through BrainFlowSource, sample by sample against the recording and the
simulator's drop log (at max speed with lost frames, at 1x across a 5-s disconnect) and against
sim://; package numbers that wrap over a gap; a silent board prepared again; boards that cannot
be read are one-line errors."""

import asyncio
import dataclasses
import json

import numpy as np
import pytest
from conftest import BUNDLED
from test_run import assert_same_records
from test_sim_serial import check_delivery, first_seconds

from firmware_sim.device import DeviceModel, DropLog
from firmware_sim.faults import FaultConfig, Faults
from himae_stream.sources.base import SourceError
from waiting import read_all

pytest.importorskip("brainflow", reason="needs brainflow: pip install '.[test]'")
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams  # noqa: E402

from firmware_sim.brainflow_playback import write_playback  # noqa: E402
from himae_stream.sources.brainflow import BrainFlowSource  # noqa: E402
from himae_stream.urls import open_source  # noqa: E402

#: the file holds 6 decimals: the recording within that
DECIMALS = 1e-6


async def replay(url: str, rows: int, timeout_s: float = 30.0, **options):
    """Read a playback board until it has sent the file's `rows` rows."""
    source = open_source(url + "".join(f"&{k}={v}" for k, v in options.items()))
    return await read_all(source, [], lambda: rows, lambda: source.counters["rows"], timeout_s, "every row of the file")


def from_device_index(chunks, first: int):
    """Chunks on the device's stream index, PPG0 only: the source counts from the first row it read,
    which is the first the device did not drop, and the recording is in the first PPG row."""
    return [dataclasses.replace(c, start=c.start + first, samples=c.samples[:1]) for c in chunks]


def test_playback_delivers_the_recording_sample_by_sample(tmp_path):
    model = DeviceModel(first_seconds(2))
    url, _ = write_playback(model, tmp_path / "rec.csv")
    stream, tap, chunks = asyncio.run(replay(url, model.length))
    values = np.concatenate([c.samples for c in chunks], axis=1)
    assert sum(len(c) for c in chunks) == model.length and stream.counters["lost_samples"] == 0
    assert tap.info.channel_names == ("PPG0", "PPG1") and tap.info.fs == 250
    # the file holds 6 decimals: the recording within that
    np.testing.assert_allclose(values[0], model.values(0, model.length)[0], atol=DECIMALS)
    assert not values[1].any()
    times = np.concatenate([c.timestamps for c in chunks])
    assert np.all(np.diff(times) > 0) and 0 <= chunks[-1].arrival - times[-1] < 0.5  # host clock


def test_max_speed_with_lost_frames_matches_the_sims_drop_log(tmp_path, himae):
    """30 s written by `himae sim` with 5 % of its frames lost, read as fast as BrainFlow reads the
    file: every sample delivered, or counted lost exactly where the drop log says."""
    made = himae("sim", "--device", "brainflow-playback", "--recording", str(BUNDLED), "--channels", "PLETH",
                 "--duration", "30", "--speed", "max", "--loss", "0.05", "--seed", "5",
                 "--out", str(tmp_path / "rec.csv"), "--log", str(tmp_path / "log.json"))
    assert made.returncode == 0, made.stderr
    log = json.loads((tmp_path / "log.json").read_text())
    dropped = DropLog([tuple(r) for r in log["dropped"]]).indices()
    model = DeviceModel(first_seconds(30))
    assert log["produced"] == model.length and log["counters"]["dropped_lost"] > 0
    url = made.stdout.strip().split("source: ")[-1]
    stream, tap, chunks = asyncio.run(replay(url, model.length - dropped.size))
    first = int(np.setdiff1d(np.arange(model.length), dropped)[0])
    lost = check_delivery(from_device_index(chunks, first), model, dropped, first, atol=DECIMALS)
    counters, last = stream.counters, first + lost.size
    assert counters["samples"] + counters["lost_samples"] + first + (model.length - last) == model.length
    assert counters["lost_samples"] == lost.sum() > 0 and counters["repeated_numbers"] == 0
    print(f"max speed: {counters['samples']} delivered, {lost.sum()} lost (+{first} before, "
          f"{model.length - last} after) = drop log {dropped.size} of {model.length}")


def test_1x_across_a_5_s_disconnect_counts_exactly_its_samples_lost(tmp_path):
    """The board goes silent for 5 s (1250 rows, over which its package numbers wrap four times)
    and comes back: one gap of exactly the disconnect's samples, times on the host clock throughout."""
    model = DeviceModel(first_seconds(8.5))
    faults = Faults(FaultConfig(disconnect_after=2.0, disconnect_for=5.0))
    url, log = write_playback(model, tmp_path / "rec.csv", faults)
    stream, tap, chunks = asyncio.run(replay(url, model.length - log.total()))
    lost = check_delivery(from_device_index(chunks, 0), model, log.indices(), atol=DECIMALS)
    counters = stream.counters
    assert log.counters == {"dropped_disconnected": 1250}
    assert counters["gaps"] == 1 and counters["lost_samples"] == lost.sum() == 1250 and counters["reconnects"] == 0
    times = np.concatenate([c.timestamps for c in chunks])
    gap = np.flatnonzero(lost)
    assert times[gap[-1] + 1] - times[gap[0] - 1] == pytest.approx(1251 / model.fs, abs=0.05)  # silent 5 s
    assert 0 <= chunks[-1].arrival - times[-1] < 0.5


def test_a_board_silent_past_idle_timeout_is_prepared_again_and_the_gap_counted_from_the_time(tmp_path):
    """A playback file whose last line was cut off (BrainFlow skips it) goes silent before its end;
    past idle_timeout its session is prepared again, which replays the file from the start (BrainFlow
    cannot resume it): one reconnect, and the gap across it counted from the host time alone, since a
    new session's numbers start anew."""
    model = DeviceModel(first_seconds(0.5))
    url, _ = write_playback(model, tmp_path / "rec.csv")
    with open(tmp_path / "rec.csv", "a") as f:
        f.write("0.0\t1.5\n")
    stream, tap, chunks = asyncio.run(replay(url, 2 * model.length, idle_timeout=0.3, reconnect=5))
    values = np.concatenate([c.samples for c in chunks], axis=1)[0]
    lost = np.concatenate([c.lost_mask for c in chunks])
    once = model.values(0, model.length)[0]
    np.testing.assert_allclose(values[~lost], np.r_[once, once], atol=DECIMALS)
    gap = np.flatnonzero(lost)
    assert stream.counters["reconnects"] == 1 and stream.counters["gaps"] == 1
    assert np.array_equal(gap, np.arange(model.length, model.length + gap.size))
    before = [p for p in tap.packets if p.seq < gap[0]][-1]
    after = next(p for p in tap.packets if p.seq == gap[-1] + 1)
    silent = after.t_us * 1e-6 - (before.t_us * 1e-6 + (gap[0] - 1 - before.seq) / model.fs)  # last row to next
    assert gap.size + 1 == pytest.approx(silent * model.fs, abs=3) and silent > 0.3
    print(f"silent {silent:.3f} s: {gap.size} lost")


def test_a_playback_file_ends_the_stream_at_its_last_line(tmp_path):
    """Not at a silence: with idle_timeout a minute, the stream still ends as the last row comes."""
    model = DeviceModel(first_seconds(0.5))
    url, _ = write_playback(model, tmp_path / "rec.csv")

    async def main():
        async with open_source(url + "&idle_timeout=60") as source:
            async for _ in source:
                pass
        return source.counters["rows"]

    assert asyncio.run(asyncio.wait_for(main(), 30)) == model.length


def test_a_board_that_cannot_be_prepared_again_is_a_one_line_error(tmp_path):
    """Its file gone once it started (and its last line cut off, so its rows never reach its end):
    silent past idle_timeout, it is prepared again with backoff until `reconnect` seconds have passed,
    then the run ends with one line saying why."""
    model = DeviceModel(first_seconds(0.3))
    url, _ = write_playback(model, tmp_path / "rec.csv")
    with open(tmp_path / "rec.csv", "a") as f:
        f.write("0.0\t1.5\n")

    async def main():
        async with open_source(url + "&idle_timeout=0.2&reconnect=1") as source:
            async for _ in source:
                (tmp_path / "rec.csv").unlink(missing_ok=True)  # the board plays on from the file it opened

    with pytest.raises(SourceError) as failure:
        asyncio.run(asyncio.wait_for(main(), 30))
    message = str(failure.value)
    assert message.startswith("BrainFlow board PLAYBACK_FILE_BOARD sent nothing for 0.2 s and did not come back "
                              "within 1 s (cannot start BrainFlow board PLAYBACK_FILE_BOARD") and "\n" not in message


@pytest.mark.parametrize("cuts", [[], [100, 150], [37, 101, 240, 303]], ids=["one-read", "cut-at-gaps", "cut-anywhere"])
def test_package_numbers_that_wrap_over_a_gap_count_it_from_the_host_time(cuts):
    """Gaps of 1250, 256, 255, 300 and 10 rows, whose package numbers step by 227, 1, 0, 45 and 11,
    with host times jittered by a sample period: each gap counted whole, however the reads cut them."""
    board = BoardIds.SYNTHETIC_BOARD
    source = BrainFlowSource(board, BrainFlowInputParams())
    index = np.cumsum(np.r_[0, np.ones(99), 1251, np.ones(49), 257, np.ones(49), 256, np.ones(49),
                            301, np.ones(49), 11, np.ones(49)]).astype(np.int64)
    # the rows as the board's ring buffer holds them
    rows = np.zeros((BoardShim.get_num_rows(board), index.size))
    rows[BoardShim.get_package_num_channel(board)] = index % 256
    rows[BoardShim.get_timestamp_channel(board)] = (
        1.7e9 + (index + np.random.default_rng(0).uniform(-1, 1, index.size)) / source.info.fs)
    got = np.concatenate([source.index_rows(rows[:, a:b]) for a, b in zip([0, *cuts], [*cuts, index.size])])
    assert np.array_equal(got, index) and source.counters["repeated_numbers"] == 0


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
