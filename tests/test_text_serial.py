"""Text-line boards (an Arduino or ESP32 printing numbers): the line parser on its own, the
simulated board over a real pseudo-terminal checked against its drop log, `himae run` on it
against the framed protocol, a port that vanishes and comes back, and bad input."""

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pytest
from conftest import BUNDLED, ECG_ONLY
from test_sim_serial import check_delivery, first_seconds, replay

from firmware_sim.device import DeviceModel
from firmware_sim.faults import FaultConfig, Faults
from firmware_sim.options import TextBoard
from firmware_sim.text_device import TextSerialDevice
from himae_stream.samplestream import SampleStream
from himae_stream.sources.base import SourceError
from himae_stream.sources.serial import SerialSource
from himae_stream.sources.textlines import MAX_LINE, TextLineReader, estimate_rate
from himae_stream.urls import SourceUrlError, open_source
from unplug import read_across_unplug


def read(data: bytes, step: int | None = None, **options):
    """Feed `data` to a reader whole or `step` bytes at a time: (reader, counters, packets)."""
    counters: dict[str, int] = {}
    reader = TextLineReader(counters, **options)
    packets = []
    for i in range(0, len(data), step or max(len(data), 1)):
        packets += reader.feed(data[i : i + (step or len(data))])
    return reader, counters, packets


def samples(packets) -> np.ndarray:
    return np.concatenate([p.physical() for p in packets], axis=1)


def indices(packets) -> np.ndarray:
    return np.concatenate([np.arange(p.seq, p.seq + p.n) for p in packets])


IR = np.arange(50000, 50070)
RED = np.arange(40000, 40070)
MILLIS = 1000 + 10 * np.arange(70)  # a 100 Hz board's millis()


@pytest.mark.parametrize("text, names", [
    ("{ir}", ["ch0"]),
    ("{ir},{red}", ["ch0", "ch1"]),
    ("{ir}, {red}", ["ch0", "ch1"]),
    ("{ir}\t{red}", ["ch0", "ch1"]),
    ("{ir};{red}", ["ch0", "ch1"]),
    ("{ir}  {red}", ["ch0", "ch1"]),
    ("ir:{ir},red:{red}", ["ir", "red"]),  # Arduino Serial Plotter
    ("ir:{ir} red:{red}", ["ir", "red"]),
    ("ir:{ir}", ["ir"]),
])
def test_layouts_at_a_given_rate(text, names):
    lines = "".join(text.format(ir=i, red=r) + "\n" for i, r in zip(IR, RED)).encode()
    reader, counters, packets = read(b"Initializing MAX30102...\n" + lines, fs=100)
    assert reader.info.channel_names == tuple(names) and reader.info.fs == 100
    assert np.array_equal(samples(packets), np.stack([IR, RED][: len(names)]))
    assert np.array_equal(indices(packets), np.arange(70))
    assert [p.t_us for p in packets] == [0]  # one read, one packet, device time from the index
    assert counters["lines"] == 70 and counters["garbage_lines"] == 1


@pytest.mark.parametrize("header, delimiter, scale, options", [
    ("millis", ",", 1, {}),
    ("time", "\t", 1, {}),  # no unit in the name: Arduino's millis()
    ("micros", ";", 1000, {}),
    ("t", " ", 0.001, {"time_unit": "s"}),
])
def test_header_and_timestamp_column_give_names_and_rate(header, delimiter, scale, options):
    rows = [f"{t * scale:g}{delimiter}{i}{delimiter}{r}" for t, i, r in zip(MILLIS, IR, RED)]
    text = f"{header}{delimiter}ir{delimiter}red\n" + "\n".join(rows) + "\n"
    reader, counters, packets = read(text.encode(), step=7, **options)
    assert reader.info.channel_names == ("ir", "red")
    assert reader.info.fs == pytest.approx(100, rel=1e-6)
    assert np.array_equal(samples(packets), np.stack([IR, RED]))
    assert packets[0].t_us == 1_000_000 and counters["header_lines"] == 1 and counters["garbage_lines"] == 0


def test_rate_from_jittery_millis_and_gaps_in_them():
    """A 30 Hz board's millis() step 33 or 34 ms: the rate is right to 0.1 %, not the median's 1.5 %;
    a timestamp jump is a gap of as many samples, a step back starts the index over there."""
    stamps = np.floor(np.arange(200) * 1000 / 30).astype(int)
    assert estimate_rate(list(stamps * 1000.0)) == pytest.approx(30, rel=1e-3)
    stamps = np.r_[stamps[:100], stamps[110:], stamps[-1] - 3000]  # 10 lines lost, then a reset
    text = "".join(f"{t},{k}\n" for k, t in enumerate(stamps)).encode()
    reader, counters, packets = read(b"ms,ppg\n" + text)
    index = indices(packets)
    assert np.array_equal(index[:-1], np.r_[0:100, 110:200])
    assert index[-1] == 199 - 90  # three seconds back: SampleStream calls it late or a restart
    assert reader.info.channel_names == ("ppg",) and reader.info.fs == pytest.approx(30, rel=2e-3)


def test_line_endings_and_reads_split_anywhere_give_the_same_samples():
    rows = [f"{t},{i}" for t, i in zip(MILLIS, IR)]
    text = ("millis,ir\r\n" + "\r\n".join(rows[:30]) + "\n" + "\n".join(rows[30:50]) + "\r"
            + "\r".join(rows[50:]) + "\r\n").encode()
    whole = read(text, fs=100)
    for step in (1, 2, 5, 64):
        _, counters, packets = read(text, step=step, fs=100)
        assert np.array_equal(samples(packets), samples(whole[2]))
        assert np.array_equal(indices(packets), np.arange(70))
        assert counters == whole[1]


def test_bad_lines_are_counted_and_skipped_never_raised():
    good = [f"{t},{i},{r}" for t, i, r in zip(MILLIS, IR, RED)]
    bad = [
        "MAX30102 was not found. Please check wiring/power.",  # junk
        "1234,5678",  # a column missing
        "1234,5678,91011,1213",  # one too many (a line cut short, the next run into it)
        "1234,abc,5678",  # not a number
        "1234,nan,5678",  # no value: delivered as a lost sample
    ]
    lines = ["millis,ir,red", *good[:10], bad[0], good[10], bad[1], bad[2], good[11], bad[3], *good[12:20]]
    text = "\n".join(lines).encode() + b"\n\xff\xfe\x80 brownout\n" + b"9" * (3 * MAX_LINE) + b"\n"
    text += ("\n".join(good[20:40]) + "\n" + bad[4].replace("1234", "1400") + "\n").encode()
    text += b"7" * (MAX_LINE + 10)  # an over-long line still without its end
    reader, counters, packets = read(text, step=1000, fs=100)
    assert counters["garbage_lines"] == 3 and counters["bad_columns"] == 2 and counters["long_lines"] == 2
    assert counters["lines"] == 41 and len(reader._partial) <= MAX_LINE
    values = samples(packets)
    assert np.array_equal(values[:, :40], np.stack([IR[:40], RED[:40]]))
    assert np.isnan(values[0, 40]) and values[1, 40] == 5678
    reader.feed(b"77\n" + good[41].encode() + b"\n")  # the long line ends; the next is read again
    assert counters["long_lines"] == 2 and counters["lines"] == 42


def test_channels_pick_columns_and_a_board_without_rate_or_timestamps_says_what_to_give():
    text = "".join(f"{i},{r}\n" for i, r in zip(IR, RED)).encode()
    reader, _, packets = read(b"ir,red\n" + text, fs=100, channels="red")
    assert reader.info.channel_names == ("red",) and np.array_equal(samples(packets), RED[None])
    with pytest.raises(SourceError, match=r"no channel matches 'ecg'"):
        read(b"ir,red\n" + text, fs=100, channels="ecg")
    with pytest.raises(SourceError, match=r"no timestamp column .*: give the sample rate, e.g. \?format=text&fs=100"):
        read(text)
    assert "\n" not in str(pytest.raises(SourceError, read, text).value)


@pytest.mark.parametrize("url, message", [
    ("serial:///dev/x?format=csv", "format must be framed, text, bitalino, shimmer, got .csv."),
    ("serial:///dev/x?format=text&time_unit=min", "time_unit must be one of s, ms, us"),
    ("serial:///dev/x?format=text&fs=fast", "parameter fs: expected a number > 0"),
    ("serial:///dev/x?fs=100", "fs go with format=text"),
])
def test_bad_text_urls_are_one_line(url, message):
    with pytest.raises(SourceUrlError, match=message):
        open_source(url)


# ---------------------------------------------------------------- the simulated board on a pty
def delivered_from(chunks, tap, model):
    """Chunks re-indexed to the device's stream index: the reader counts from the first line it
    read, which is the first the device did not drop."""
    first = int(np.flatnonzero(model.timestamps_us(0, model.length) // 1000 * 1000 == tap.packets[0].t_us)[0])
    return [dataclasses.replace(c, start=c.start + first) for c in chunks], first


def test_board_at_1x_delivers_every_line_on_time():
    model = DeviceModel(first_seconds(4))
    with TextSerialDevice(model, TextBoard(millis=True), speed=1.0) as device:
        stream, tap, chunks = asyncio.run(replay(device, 30, reader=TextLineReader))
    assert tap.info.channel_names == ("PLETH",) and tap.info.fs == pytest.approx(model.fs, rel=1e-3)
    chunks, first = delivered_from(chunks, tap, model)
    assert first == 0 and not check_delivery(chunks, model, device.log.indices()).any()
    times = np.concatenate([c.timestamps for c in chunks])
    assert abs((times[-1] - times[0]) - 4.0) < 0.1  # paced: 4 s of samples over ~4 s of host clock
    assert all(p.t_us == model.timestamps_us(p.seq, p.seq + 1)[0] // 1000 * 1000 for p in tap.packets)


@pytest.mark.parametrize("board", [
    TextBoard(millis=True, garbage=0.03),
    TextBoard(millis=True, delimiter="\t", plotter=True, garbage=0.03),
    TextBoard(millis=True, delimiter=" ", garbage=0.03),
])
def test_board_at_full_speed_with_faults_matches_its_drop_log(board):
    """Lines lost, cut short and junk between them, as fast as the pty takes: every sample is
    delivered exactly or marked lost where the board's drop log says it did not get through."""
    model = DeviceModel(first_seconds(30))
    faults = Faults(FaultConfig(loss=0.02, corrupt=0.02, seed=5))
    with TextSerialDevice(model, board, faults, speed=None) as device:
        stream, tap, chunks = asyncio.run(replay(device, 60, reader=TextLineReader))
    chunks, first = delivered_from(chunks, tap, model)
    lost = check_delivery(chunks, model, device.log.indices(), first)
    log, counters = device.log.counters, stream.counters
    assert log["dropped_lost"] > 0 and log["dropped_cut"] > 0 and log["garbage"] > 0
    assert counters["lost_samples"] == lost.sum() and counters["samples"] + lost.sum() + first == model.length
    # every junk line and every pair of lines run together is counted once (a junk line right after
    # a cut one runs into it: one line less)
    cuts = sum(1 for _, _, why in device.log.dropped if why == "cut")
    assert counters["garbage_lines"] + counters["bad_columns"] <= log["garbage"] + cuts
    assert counters["garbage_lines"] + counters["bad_columns"] >= log["garbage"]
    print(f"{board}: {counters['samples']} delivered, {lost.sum()} lost = drop log {device.log.total()}")


# ---------------------------------------------------------------- the port vanishes and comes back
def test_port_unplugged_and_plugged_back_reopens_and_marks_the_gap(tmp_path):
    """A board's port disappears mid-line and comes back (a symlink, as /dev/serial/by-id/...):
    the reader reopens it, counts one reconnect, the cut line is counted, and the 5 s the board
    was away show as exactly that many lost samples, read from its millis() column."""
    def lines(start, stop):
        return "".join(f"{1000 + 10 * k},{50000 + k}\n" for k in range(start, stop)).encode()

    source = SerialSource(str(tmp_path / "board"), idle_timeout_s=5.0, reconnect_timeout_s=5.0,
                          reader=partial(TextLineReader, fs=100))

    def plugged_back(master):
        """Back after 5 s of its own clock: banner lines at its pace until the reader reads again, then on."""
        deadline = time.monotonic() + 10
        while not source.counters["reconnects"]:
            assert time.monotonic() < deadline, "the reader did not reopen the port"
            os.write(master, b"Initializing MAX30102...\n")
            time.sleep(0.02)
        os.write(master, b"millis,ir\n" + lines(600, 700))

    before = b"millis,ir\n" + lines(0, 100) + b"2000,501"  # the last line cut by the unplug
    chunks, counters = read_across_unplug(source, tmp_path / "board", before, 100, 700, plugged_back)
    values = np.concatenate([c.samples for c in chunks], axis=1)[0]
    lost = np.concatenate([c.lost_mask for c in chunks])
    assert np.array_equal(np.flatnonzero(lost), np.arange(100, 600))
    assert np.array_equal(values[~lost], 50000 + np.r_[0:100, 600:700])
    assert counters["reconnects"] == 1 and counters["lost_samples"] == 500 and counters["gaps"] == 1
    assert counters["garbage_lines"] >= 1 and counters["header_lines"] == 2  # the cut line; the header twice


# ---------------------------------------------------------------- `himae sim` and `himae run`
@contextlib.contextmanager
def text_board(*args):
    """`himae sim --device text-serial` in another process: yields the source URL it announces.
    The board stays up once its replay is over, until the test is done with it."""
    sim = subprocess.Popen([sys.executable, "-m", "himae_stream.cli", "sim", "--device", "text-serial",
                            "--linger", "60", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in sim.stdout:
            if line.startswith("source: "):
                yield line.split(" ", 1)[1].strip()
                break
        else:
            pytest.fail(f"the simulator did not announce its port: {sim.stderr.read()}")
    finally:
        sim.kill()
        sim.wait()


def records(path):
    return [json.loads(line) for line in open(path)]


def test_run_on_a_text_board_writes_the_framed_replays_records(tmp_path, himae):
    """The same 12 s of the bundled record, printed as text lines by a board in another process
    and replayed over the framed protocol: the same windows, embeddings equal to float32 rounding."""
    text_out, framed_out = tmp_path / "text.jsonl", tmp_path / "framed.jsonl"
    with text_board("--recording", str(BUNDLED), "--channels", "PLETH", "--duration", "12", "--speed", "max",
                    "--garbage", "0.01") as url:
        assert "format=text" in url and "fs=250" in url
        text = himae("run", "--source", url, "--duration", "12s", "--sink", f"jsonl://{text_out}", timeout=120)
    framed = himae("run", "--source", f"sim://{BUNDLED}?channels=PLETH&speed=max&duration=12", "--duration", "12s",
                   "--sink", f"jsonl://{framed_out}", timeout=120)
    assert text.returncode == 0 and framed.returncode == 0, text.stderr + framed.stderr
    got, want = records(text_out), records(framed_out)
    assert len(got) == len(want) == 5 and "lost 0" in text.stderr
    for g, w in zip(got, want):
        assert (g["start"], g["end"], g["lost_fraction"]) == (w["start"], w["end"], w["lost_fraction"])
        for a, b in zip(g["embeddings"], w["embeddings"]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert g["predictions"]["heart_rate"] == pytest.approx(w["predictions"]["heart_rate"], rel=1e-4)


@pytest.mark.parametrize("sim_args, drop, message", [
    (["--recording", str(BUNDLED), "--channels", "PLETH", "--no-header"], "&fs=250",
     "give the sample rate, e.g. ?format=text&fs=100"),
    (["--recording", str(ECG_ONLY), "--channels", "MLII"], "",
     "found 0 among MLII; name the channel with --channels"),
])
def test_a_board_the_model_cannot_read_is_one_line_exit_2(sim_args, drop, message, himae):
    with text_board(*sim_args, "--duration", "12", "--speed", "max") as url:
        result = himae("run", "--source", url.replace(drop, ""), "--duration", "12s", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_sim_url_replays_through_a_text_board():
    source = open_source(f"sim://{BUNDLED}?channels=PLETH&transport=text-serial&speed=max&duration=3"
                         "&millis=1&plotter=1&delimiter=space")

    async def main():
        stream = SampleStream(source)
        return [c async for c in stream], stream.counters

    chunks, counters = asyncio.run(main())
    assert source.info.channel_names == ("PLETH",) and counters["samples"] == 750 and counters["lost_samples"] == 0
    with pytest.raises(ValueError, match="delimiter must be one of comma, tab, semicolon, space"):
        open_source(f"sim://{BUNDLED}?transport=text-serial&delimiter=pipe")

