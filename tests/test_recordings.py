"""Reading recordings: one channel rule for every command, the wearable NPZ layout, one-line errors."""

import datetime
import gc
import json
import warnings

import numpy as np
import pytest
from conftest import BUNDLED, ECG_ONLY, V102S, WRIST_RUN

from himae_stream.cli import main
from himae_stream.recordings import DEMO, LED_PATTERNS, PPG_PATTERNS, RecordingError, load, match_channels, model_patterns

PPG_MODEL = ["PPG"]


@pytest.mark.parametrize("names,picked", [
    (["II", "V", "PLETH"], "PLETH"),  # PhysioNet finger PPG beside ECG
    (["ECG", "PPG1", "PPG2", "ACC_X", "ACC_Y", "ACC_Z"], "PPG1"),  # TROIKA: the first wrist PPG
    (["BVP", "EDA", "TEMP"], "BVP"),  # Empatica
    (["ACC_X", "ppg_green"], "ppg_green"),  # names are matched case-insensitively
    (["Pulse", "SpO2"], "Pulse"),
    (["PPG", "ECG"], "PPG"),
    (["millis", "red", "ir"], "ir"),  # a MAX3010x board: infrared is the pulse signal
    (["GREEN", "PLETH"], "PLETH"),  # LED names only when no usual PPG name is there
])
def test_a_ppg_model_finds_the_ppg_channel_by_its_usual_names(names, picked):
    assert [names[i] for i in match_channels(names, None, 1, PPG_MODEL)] == [picked]


def test_channels_named_by_the_user_come_first_and_an_unnamed_single_channel_is_read_as_is():
    assert match_channels(["II", "V", "PLETH"], "V", 1, PPG_MODEL) == [1]
    assert match_channels(["II", "V", "PLETH"], ["X*", "PLETH"], 1, PPG_MODEL) == [2]  # alternatives
    assert match_channels(["ch0"], None, 1, PPG_MODEL) == [0]  # a bare array or an unnamed device channel
    with pytest.raises(RecordingError, match="found 0 among ch0"):
        match_channels(["ch0"], "PLETH", 1, PPG_MODEL)  # but never against the user's own choice
    assert model_patterns(["PPG"]) == ["PPG", *PPG_PATTERNS, *LED_PATTERNS]
    assert model_patterns(["ACC_X"]) == ["ACC_X"]  # aliases only for PPG


def test_an_ecg_only_recording_is_refused_with_a_hint():
    rec = load(ECG_ONLY)
    with pytest.raises(RecordingError, match=r"found 0 among MLII, V5; name the channel with --channels \(or "
                                             r"channels= in a URL\)$"):  # himae run's two ways
        match_channels(rec.channel_names, None, 1, PPG_MODEL)
    with pytest.raises(RecordingError, match=r"found 0 among ecg; name the channel"):
        match_channels(["ecg"], None, 1, PPG_MODEL)  # one channel, named as something else
    with pytest.raises(RecordingError, match=r"found 0 among V; name the channel"):
        match_channels(["V"], None, 1, PPG_MODEL)  # an ICU monitor's chest lead, kept alone


def test_wearable_npz_layout_reads_ppg_ecg_and_accelerometer():
    rec = load(WRIST_RUN)
    z = np.load(WRIST_RUN)
    assert rec.channel_names == ["PPG", "ECG", "ACC_X", "ACC_Y", "ACC_Z"] and rec.fs == 256.0
    np.testing.assert_array_equal(rec.signals[0], z["ppg"])
    np.testing.assert_array_equal(rec.signals[2:], z["acc"])
    assert rec.subject.endswith(":s3") and "Wrist PPG" in rec.subject  # subject ids carry their data set


def test_wearable_npz_of_windows_at_a_float32_rate(tmp_path):
    path = tmp_path / "cam.npz"
    np.savez(path, ppg=np.ones((3, 250), np.float32), fs_ppg=np.float32(29.9), subject="7",
             acc=np.zeros((3, 10), np.float32), fs_acc=np.float32(32))
    rec = load(path)
    assert rec.fs == 29.9 and rec.channel_names == ["PPG"] and rec.signals.shape == (1, 750)


def test_the_demo_record_is_the_one_the_package_bundles():
    assert DEMO.samefile(BUNDLED) and load(DEMO).channel_names == ["II", "V", "PLETH"]


def _garbage(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name,content,message", [
    ("text.mat", b"just some text\n" * 20, "cannot read recording"),
    ("empty.mat", b"", "the file is empty"),
    ("empty.npy", b"", "the file is empty"),
    ("short.npy", b"\x93NUMPY", "cannot read recording"),
    ("empty.hea", b"", "the file is empty"),
    ("blank.hea", b"\n \n", "the WFDB header is empty"),
    ("bad.hea", b"rec 1 250 100\nrec.dat 16 200 0 0 0 0 0 X\n", "cannot read recording"),
    ("bad.npz", b"PK\x03\x04 not a zip", "cannot read recording"),
    ("odd.csv", b"time,PPG\n0,1\n0.01,2,3\n", "line 3 is not a row of 2 numbers: '0.01,2,3'"),
    ("tail.csv", b"time,PPG\n# a comment\n0,1\n\n0.01,2\nend,\n", "line 6 is not a row of 2 numbers: 'end,'"),
    ("header.csv", b"time,PPG\n", "no rows of samples under the header"),
    ("blank.csv", b"\n \n", "empty file"),
    ("still.csv", b"time,PPG\n0,1\n0,2\n0,3\n", "the time column does not increase"),
    ("backwards.csv", b"time,PPG\n0.02,1\n0.01,2\n0,3\n", "the time column does not increase"),
    ("other.npz", None, "no 'signals' array"),
    ("BVP.csv", b"1644226061.0\n64.0\n", "no rows of samples under the start time and rate"),
    ("clock.csv", b"millis\n0\n10\n", "only a time column"),
])
def test_a_bad_recording_is_one_error_naming_the_file(tmp_path, name, content, message):
    if content is None:
        path = tmp_path / name
        np.savez(path, x=np.zeros(3))
    else:
        path = _garbage(tmp_path, name, content)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(RecordingError, match=message) as err:
            load(path)
        text = str(err.value)
        del err  # its traceback's frames would keep a leaked file object alive past the collection
        gc.collect()  # a file left open warns here, not during some later test
    assert name in text and "\n" not in text
    assert not seen, "the one-line error is all the user sees"


def test_a_folder_is_not_a_recording(tmp_path):
    folder = tmp_path / "rec.csv"
    folder.mkdir()
    with pytest.raises(RecordingError, match="not a regular file"):
        load(folder)


def test_rate_messages_name_the_flag(tmp_path):
    csv = _garbage(tmp_path, "x.csv", b"PPG\n1\n2\n3\n")
    with pytest.raises(RecordingError, match=r"x.csv: no time column; give the sampling rate \(--fs"):
        load(csv)
    np.save(tmp_path / "y.npy", np.zeros(3))
    with pytest.raises(RecordingError, match=r"y.npy: a .npy file carries no sampling rate; give it \(--fs"):
        load(tmp_path / "y.npy")
    with pytest.raises(RecordingError, match="must be a number > 0"):
        load(csv, fs=0.0)


@pytest.mark.parametrize("text, fs, names", [
    ("time,PPG\n0,1\n0.01,2\n0.02,3\n", 100.0, ["PPG"]),
    ("millis,ir,red\n0,1,7\n40,2,7\n80,3,7\n", 25.0, ["ir", "red"]),
    ("ir,t_us,red\n1,0,7\n2,15625,7\n3,31250,7\n", 64.0, ["ir", "red"]),
    ("PPG,Timestamp\n1,0\n2,2\n3,4\n", 0.5, ["PPG"]),
])
def test_a_time_column_by_any_of_its_names_gives_the_rate(tmp_path, text, fs, names):
    """The names and units text lines read as timestamps (`TIME_NAMES`), in any column; a name
    without a unit is seconds in a file."""
    rec = load(_garbage(tmp_path, "x.csv", text.encode()))
    assert rec.fs == pytest.approx(fs) and rec.channel_names == names
    assert rec.signals[0].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("text", [
    b"\xef\xbb\xbftime,PPG\r\n0,1\r\n0.01,2.5\r\n0.02,3\r\n",  # "CSV UTF-8" with a byte-order mark, CRLF
    b"time;PPG\n0;1\n0,01;2,5\n0,02;3\n",  # a spreadsheet that writes decimal commas
    b"time;PPG\n0;1\n0.01;2.5\n0.02;3\n",
    b"time\tPPG\n0\t1\n0.01\t2.5\n0.02\t3\n",
])
def test_csv_files_as_spreadsheets_save_them(tmp_path, text):
    """Columns split by commas, semicolons (with decimal points or commas) or tabs, and a leading
    byte-order mark, read the same samples at the same rate."""
    rec = load(_garbage(tmp_path, "x.csv", text))
    assert rec.fs == pytest.approx(100.0) and rec.channel_names == ["PPG"]
    assert rec.signals.tolist() == [[1.0, 2.5, 3.0]]


def test_headerless_semicolon_columns_with_decimal_commas_lose_no_row(tmp_path):
    """A first row of numbers is data, not a header, in whichever separator and decimal mark it is."""
    rec = load(_garbage(tmp_path, "x.csv", b"0,5;1\n1,5;2\n-2;3,25\n"), fs=25.0)
    assert rec.signals.tolist() == [[0.5, 1.5, -2.0], [1.0, 2.0, 3.25]]


def test_an_empatica_export_and_headerless_columns_are_read_whole(tmp_path):
    """An Empatica E4 export (start time, rate, then samples) needs no --fs and loses no sample to a
    header; a rate given that disagrees with the file's is refused; plain columns of numbers are
    all samples."""
    bvp = _garbage(tmp_path, "BVP.csv", b"1644226061.000000\n64.000000\n-0.5\n1.25\n3.0\n")
    rec = load(bvp)
    assert (rec.fs, rec.channel_names, rec.start) == (64.0, ["BVP"], 1644226061.0)
    np.testing.assert_array_equal(rec.signals, [[-0.5, 1.25, 3.0]])
    assert load(bvp, fs=64.0).fs == 64.0
    with pytest.raises(RecordingError, match="an Empatica export at 64 Hz, not the 100 Hz given"):
        load(bvp, fs=100.0)
    acc = load(_garbage(tmp_path, "ACC.csv", b"1644226061,1644226061,1644226061\n32,32,32\n-2,43,43\n"))
    assert (acc.fs, acc.channel_names, acc.signals[:, 0].tolist()) == (32.0, ["ACC_X", "ACC_Y", "ACC_Z"],
                                                                        [-2, 43, 43])
    plain = _garbage(tmp_path, "ppg.csv", b"51234\n51240\n51229\n")
    with pytest.raises(RecordingError, match="give the sampling rate"):
        load(plain)
    rec = load(plain, fs=25.0)
    assert rec.channel_names == ["ppg"] and rec.signals.tolist() == [[51234, 51240, 51229]] and rec.start is None


@pytest.mark.parametrize("column,first,step", [
    ("timestamp", "1700000000125", 10), ("timestamp", "1700000000.125", 0.01), ("time_ms", "1700000000125", 10),
    ("timestamp", "1700000000125000", 1e4)])
def test_a_time_column_of_unix_times_gives_the_recordings_start(tmp_path, column, first, step):
    """Unix times (a phone app's export: milliseconds, often under a name without a unit) give the start and,
    read in their unit, the rate; a device's clock since it started gives no start."""
    rows = "".join(f"{float(first) + i * step!r},{i}\n" for i in range(3)).replace(".0,", ",")
    unix = load(_garbage(tmp_path, "u.csv", f"{column},ppg\n{rows}".encode()))
    assert unix.fs == pytest.approx(100.0) and unix.start == pytest.approx(1700000000.125, abs=1e-6)
    assert load(_garbage(tmp_path, "m.csv", b"millis,ir\n1000,5\n1010,6\n1020,7\n")).start is None
    assert load(_garbage(tmp_path, "t.csv", b"time,ir\n0,5\n0.01,6\n0.02,7\n")).start is None


def polar_logger_export(path, fs: float, rows: list[str], header: str):
    """A Polar Sensor Logger export as the app (built on Polar's SDK example) writes one: the phone's clock as
    ISO text, the sensor's in nanoseconds since 2000 at `fs`, then `rows`' values, split by semicolons."""
    t0, ns0 = datetime.datetime(2026, 6, 21, 6, 5, 23, 891000), 835_351_534_233_872_000
    lines = [header] + [f"{(t0 + datetime.timedelta(seconds=i / fs)).isoformat(timespec='milliseconds')};"
                        f"{ns0 + round(i * 1e9 / fs)};{row}" for i, row in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_polar_sensor_logger_export_reads_as_polar_streams_it(tmp_path):
    """A Verity Sense's PPG file gives the channels `polar://` gives (PPG, the mean of the three, first), at
    the rate of the sensor's clock; ACC and ECG files their signals; a bad line is named as in any CSV."""
    values = np.array([[200_000 + 3000 * np.sin(i / 8) // 1 + k * 7 for k in range(3)] for i in range(600)], int)
    rows = [f"{a};{b};{c};-180" for a, b, c in values]
    ppg = load(polar_logger_export(tmp_path / "Polar_Sense_B5A12B2C_20260621_060523_PPG.txt", 55.0, rows,
                                   "Phone timestamp;sensor timestamp [ns];channel 0;channel 1;channel 2;ambient "))
    assert ppg.channel_names == ["PPG", "PPG0", "PPG1", "PPG2", "AMBIENT"]
    assert abs(ppg.fs - 55.0) < 1e-5 * 55  # nanoseconds near 8e17 as float64: 128-ns steps
    np.testing.assert_array_equal(ppg.signals[1:4], values.T)
    np.testing.assert_array_equal(ppg.signals[0], values.mean(axis=1))
    assert (ppg.signals[4] == -180).all()
    assert match_channels(ppg.channel_names, None, 1, PPG_MODEL) == [0]  # what every command reads
    assert ppg.start is None  # the sensor's clock counts from 2000, the phone's has no time zone
    acc = load(polar_logger_export(tmp_path / "Polar_Sense_B5A12B2C_ACC.txt", 52.0, ["-12;980;40"] * 100,
                                   "Phone timestamp;sensor timestamp [ns];X [mg];Y [mg];Z [mg]"))
    assert acc.channel_names == ["ACC_X", "ACC_Y", "ACC_Z"] and acc.signals[:, 0].tolist() == [-12, 980, 40]
    ecg = load(polar_logger_export(tmp_path / "Polar_H10_ECG.txt", 130.0, ["-120", "355"] * 50,
                                   "Phone timestamp;sensor timestamp [ns];ecg [uV]"))
    assert ecg.channel_names == ["ECG"] and abs(ecg.fs - 130.0) < 1e-5 * 130
    bad = polar_logger_export(tmp_path / "bad_PPG.txt", 55.0, rows[:5] + ["1;2;x;4"] + rows[5:10],
                              "Phone timestamp;sensor timestamp [ns];channel 0;channel 1;channel 2;ambient")
    with pytest.raises(RecordingError, match=r"bad_PPG.txt: line 7 is not a row of 6 numbers: '2026-06-21T06:05:23.9"):
        load(bad)


@pytest.mark.parametrize("name,content", [("text.mat", b"hello\n"), ("empty.npy", b""), ("empty.hea", b"")])
def test_cli_reads_bad_files_as_one_line_and_exit_2(tmp_path, capsys, name, content):
    path = _garbage(tmp_path, name, content)
    assert main(["embed", str(path), "-o", str(tmp_path / "e.npz"), "--fs", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err and "Traceback" not in err


def test_every_command_reads_the_bundled_record_without_channels(tmp_path, random_model_file):
    """`himae embed`, the Python run API and `sim://` all take PLETH by the rule, as `himae run` does."""
    import himae_stream

    model = random_model_file("himae-25")
    assert main(["embed", str(BUNDLED), "-o", str(tmp_path / "e.npz"), "--model", model]) == 0
    records = list(himae_stream.run_blocking(f"sim://{BUNDLED}?speed=max&duration=12", model=model))
    assert records and all(r["lost_fraction"] == 0.0 for r in records)
    out = tmp_path / "r.jsonl"
    assert main(["run", "--source", f"sim://{V102S}?speed=max&duration=12", "--model", model,
                 "--sink", f"jsonl://{out}"]) == 0
    assert [json.loads(line)["window"] for line in out.read_text().splitlines()] == list(range(len(records)))
