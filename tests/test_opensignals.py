"""OpenSignals text files (BITalino, biosignalsplux) read as PLUX's format describes them, checked against
opensignalsreader, an independent reader of BITalino files."""

import json

import numpy as np
import pytest
from edited import load_edited
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himae_stream.recordings import RecordingError, find_recordings, load

FIRST_LINE = "# OpenSignals Text File Format. Version 1\n"


def device(rate, sensors, labels, columns, position=0, kind="bitalino_rev"):
    """A device's description as OpenSignals writes it in the header."""
    return {"sensor": sensors, "device name": "20:16:07:18:13:27", "column": columns, "sync interval": 2,
            "time": "14:59:13.521", "comments": "", "device connection": "BTH20:16:07:18:13:27",
            "channels": list(range(1, len(labels) + 1)), "date": "2024-3-5", "mode": 0, "digital IO": [0, 0, 1, 1],
            "firmware version": 1281, "device": kind, "position": position, "sampling rate": rate,
            "label": labels, "resolution": [4] + [1] * (len(columns) - 1 - len(labels)) + [10] * len(labels),
            "special": [{} for _ in labels]}


def write(path, devices: dict, rows: np.ndarray) -> None:
    """The header, then one tab-separated row of integers per sample with the tab OpenSignals leaves at the end."""
    with open(path, "w") as f:
        f.write(FIRST_LINE + "# " + json.dumps(devices) + "\n# EndOfHeader\n")
        for row in rows.astype(np.int64):
            f.write("\t".join(map(str, row)) + "\t\n")


def bitalino_rows(n, seed=0):
    """nSeq, I1, I2, O1, O2, then A1 (a pulse wave in 10-bit codes) and A2 (noise around mid-scale)."""
    t = np.arange(n) / 100.0
    rng = np.random.default_rng(seed)
    pulse = 512 + 200 * np.sin(2 * np.pi * 1.1 * t) + rng.normal(0, 5, n)
    return np.c_[np.arange(n) % 16, np.zeros((n, 2)), np.ones((n, 2)), np.round(pulse), rng.integers(0, 1024, n)]


def test_a_bitalino_file_reads_as_opensignalsreader_reads_it(tmp_path):
    from opensignalsreader import OpenSignalsReader

    path = tmp_path / "opensignals_201607181327_2024-03-05_14-59-13.txt"
    rows = bitalino_rows(3000)
    write(path, {"20:16:07:18:13:27": device(100, ["PPGBIT", "ECGBIT"], ["A1", "A2"],
                                             ["nSeq", "I1", "I2", "O1", "O2", "A1", "A2"])}, rows)
    rec = load(path)
    theirs = OpenSignalsReader(str(path), raw=True)
    assert rec.fs == theirs.sampling_rate == 100
    assert rec.channel_names == ["PPG", "ECG"] and theirs.sensors == ["PPG", "ECG"]
    for i, name in enumerate(rec.channel_names):
        np.testing.assert_array_equal(rec.signals[i], theirs.raw(name))
    np.testing.assert_array_equal(rec.signals, rows[:, 5:].T)
    assert rec.start is None  # the header's clock time has no zone
    with pytest.raises(RecordingError, match="an OpenSignals recording at 100 Hz, not the 50 Hz given"):
        load(path, fs=50.0)


def test_devices_recorded_together_and_repeated_sensors_get_their_columns_and_distinct_names(tmp_path):
    """Two devices in one file (columns one after another in each row, by position); a sensor that repeats
    is named with its label, and with its device where that repeats too."""
    n = 400
    first = device(1000, ["PPG", "PPG"], ["CH1", "CH2"], ["nSeq", "DI", "CH1", "CH2"], position=1,
                   kind="biosignalsplux")
    second = device(1000, ["BVP", "PPG"], ["CH1", "CH2"], ["nSeq", "DI", "CH1", "CH2"], position=0,
                    kind="biosignalsplux")
    rows = np.arange(n * 8).reshape(n, 8)
    write(tmp_path / "two.txt", {"00:07:80:3B:46:61": first, "00:07:80:3B:46:62": second}, rows)
    rec = load(tmp_path / "two.txt")
    assert rec.channel_names == ["BVP", "PPG_CH2_0", "PPG_CH1", "PPG_CH2_1"]
    np.testing.assert_array_equal(rec.signals, rows[:, [2, 3, 6, 7]].T)


@pytest.mark.parametrize("edit, message", [
    (lambda d: {**d, "x": {**d["x"], "sampling rate": 50}}, "its devices sample at 50, 100 Hz"),
    (lambda d: {"x": {**d["x"], "label": ["A9"], "sensor": ["PPGBIT"]}}, "channel label 'A9' is not among the columns"),
    (lambda d: {"x": {**d["x"], "sensor": ["PPGBIT"]}}, "device x has 1 sensors for 2 channel labels"),
    (lambda d: {"x": {k: v for k, v in d["x"].items() if k != "sampling rate"}}, "device x lacks its sampling rate"),
    (lambda d: {"x": {**d["x"], "sampling rate": "fast"}}, "sampling rate 'fast' is not a number"),
    (lambda d: {"x": {**d["x"], "sampling rate": 0}}, "sampling rate 0 is not a rate"),
    (lambda d: [], "the device description names no device"),
])
def test_a_broken_header_is_one_line_naming_the_file(tmp_path, edit, message):
    described = {"x": device(100, ["PPGBIT", "ECGBIT"], ["A1", "A2"], ["nSeq", "I1", "I2", "O1", "O2", "A1", "A2"]),
                 "y": device(100, ["EDABIT"], ["A3"], ["nSeq", "A3"], position=1)}
    path = tmp_path / "bad.txt"
    write(path, edit(described), bitalino_rows(50))
    with pytest.raises(RecordingError) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_samples_the_host_missed_are_lost_samples_where_they_were(tmp_path):
    """A BITalino counts its samples modulo 16: 5 missed show as a step of 6, and are NaN in their place
    (a run of exactly 16 missed cannot be seen); a file whose numbers skip more than the file could hold
    is refused."""
    rows = bitalino_rows(1000)
    kept = np.r_[0:100, 105:500, 516:1000]  # 5 missed, then 16 missed
    path = tmp_path / "lossy.txt"
    write(path, {"x": device(100, ["PPGBIT", "ECGBIT"], ["A1", "A2"], ["nSeq", "I1", "I2", "O1", "O2", "A1", "A2"])},
          rows[kept])
    rec = load(path)
    assert rec.signals.shape == (2, 1000 - 16)
    lost = np.isnan(rec.signals)
    assert (lost[0] == lost[1]).all() and np.flatnonzero(lost[0]).tolist() == list(range(100, 105))
    np.testing.assert_array_equal(rec.signals[:, ~lost[0]], rows[kept, 5:].T)
    skipping = rows[:40].copy()
    skipping[:, 0] = np.arange(40) * 4000 % 65536  # 3,999 missed before every sample
    write(path, {"x": device(100, ["PPGBIT"], ["A1"], ["nSeq", "I1", "I2", "O1", "O2", "A1"])}, skipping[:, :6])
    with pytest.raises(RecordingError, match="sequence numbers skip 155961 samples, more than 7 times the 40"):
        load(path)


def test_a_header_that_is_not_json_or_does_not_end(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_text(FIRST_LINE + "# {\"x\": {\n# EndOfHeader\n1\t2\n")
    with pytest.raises(RecordingError, match="the device description is not JSON"):
        load(path)
    path.write_text(FIRST_LINE + "# {}\n1\t2\n")
    with pytest.raises(RecordingError, match="no device description and '# EndOfHeader'"):
        load(path)


def test_a_folder_finds_opensignals_and_polar_files_among_its_txt_files(tmp_path):
    """A folder's .txt is a recording when its first line says so; notes beside them are not."""
    write(tmp_path / "bitalino.txt", {"x": device(100, ["PPGBIT"], ["A1"], ["nSeq", "A1"])},
          bitalino_rows(1200)[:, [0, 5]])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Polar_Sense_B5D5F123_20240305_145913_PPG.TXT").write_text(
        "Phone timestamp;sensor timestamp [ns];channel 0;channel 1;channel 2;ambient \n"
        "2024-03-05T14:59:13.100;599616000000000000;1;2;3;4\n"
        "2024-03-05T14:59:13.120;599616000018000000;1;2;3;4\n")
    (tmp_path / "notes.txt").write_text("subject 1, seated\n")
    (tmp_path / "empty.txt").write_text("")
    assert [p.name for p in find_recordings(tmp_path)] == ["bitalino.txt", "Polar_Sense_B5D5F123_20240305_145913_PPG.TXT"]
    rec = load(tmp_path / "bitalino.txt")
    np.testing.assert_array_equal(rec.signals[0], bitalino_rows(1200)[:, 5])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 1200), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4),
       cut=st.integers(0, 64))
def test_any_edit_of_a_file_is_read_or_refused_as_a_recording_error(tmp_path, edits, cut):
    """Bytes overwritten anywhere (the header's JSON, the rows, the sequence numbers) and the end cut off: the
    file is read, or refused with a one-line RecordingError, never another exception."""
    path = tmp_path / "clean.txt"
    if not path.exists():
        write(path, {"x": device(100, ["PPGBIT", "ECGBIT"], ["A1", "A2"], ["nSeq", "I1", "I2", "O1", "O2", "A1", "A2"])},
              bitalino_rows(40))
    rec = load_edited(tmp_path / "edited.txt", path.read_bytes(), edits, cut)
    assert rec is None or (rec.signals.ndim == 2 and rec.fs > 0)
