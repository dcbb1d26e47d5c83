"""`himae` at its edges, as a user runs it: a failing source leaves the user's files alone, a run
that cannot produce a window says why (exit 2), Ctrl-C exits 130 after the summary, and every
bad number is one line naming the option and what it accepts."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from himae_stream.recordings import DEMO

BUNDLED = "himae_stream/data/a103l.hea"


def one_line_error(result, code: int = 2) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def user_files(folder):
    """Earlier results a run must not touch: a 131 kB csv, a jsonl and an npz."""
    rng = np.random.default_rng(0)
    files = {folder / "out.csv": rng.bytes(131_000), folder / "out.jsonl": b'{"window":0}\n'}
    for path, data in files.items():
        path.write_bytes(data)
    np.savez(folder / "out.npz", start=np.arange(5))
    files[folder / "out.npz"] = (folder / "out.npz").read_bytes()
    return files


@pytest.mark.parametrize("source", ["serial:///dev/does-not-exist", "sim://missing.hea?channels=PLETH",
                                    "file://{dir}/missing.bin"])
def test_a_failing_source_leaves_the_users_files_as_they_were(tmp_path, himae, source):
    files = user_files(tmp_path)
    sinks = [f"--sink={path.suffix[1:]}://{path}" for path in files]
    result = himae("run", "--source", source.format(dir=tmp_path), "--duration", "10s", *sinks, timeout=120)
    assert "missing" in one_line_error(result) or "does-not-exist" in result.stderr
    assert {path: path.read_bytes() for path in files} == files
    assert sorted(tmp_path.iterdir()) == sorted(files), "no partial file left behind"


def test_an_unwritable_sink_folder_is_refused_before_the_run(tmp_path, himae):
    from test_sinks import unwritable_folder

    folder = unwritable_folder(tmp_path)
    result = himae("run", "--duration", "10s", "--sink", f"npz://{folder}/out.npz", timeout=120)
    assert f"cannot write in {folder}" in one_line_error(result)


def test_a_window_longer_than_the_duration_is_exit_2(himae):
    line = one_line_error(himae("run", "--window", "100s", "--duration", "30s", timeout=120))
    assert "--duration 30 s is shorter than the 100 s window (--window)" in line


def test_a_source_shorter_than_a_window_is_exit_2(himae):
    source = f"sim://{BUNDLED}?channels=PLETH&speed=max&duration=5"
    line = one_line_error(himae("run", "--source", source, "--window", "8s", timeout=120))
    assert "ended after 5 s of signal, shorter than the 8 s window (--window)" in line


def test_a_source_of_nothing_decodable_says_what_it_read(tmp_path, himae):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(np.random.default_rng(1).bytes(3000))
    line = one_line_error(himae("run", "--source", f"file://{garbage}", timeout=120))
    assert "no samples decoded from 3000 bytes read: 0 frames" in line and "dropped" in line


def test_the_summary_of_a_run_without_windows_says_so():
    from himae_stream import load_model
    from himae_stream.commands.run import _summary
    from himae_stream.pipeline import Pipeline
    from himae_stream.samplestream import SampleStream

    summary = _summary(Pipeline(load_model("himae-100")), SampleStream())
    assert summary.startswith("himae run: no windows, 0 samples") and "nan" not in summary


def first_line(stream, timeout_s: float) -> str:
    """The first line `stream` gives, or a test failure once `timeout_s` has passed without one."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        pytest.fail(f"no output within {timeout_s} s")


def test_ctrl_c_prints_the_summary_exits_130_and_keeps_the_records(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("earlier results\n")
    # the demo record looped, so the run is still going when Ctrl-C comes, however busy the machine;
    # Ctrl-C as a terminal delivers it: a test run started in the background (`pytest &`) ignores
    # SIGINT, and its children would inherit that
    run = subprocess.Popen(
        [sys.executable, "-m", "himae_stream.cli", "run", "--source", f"sim://{DEMO}?speed=10&loop=1",
         "--sink", "jsonl://-", "--sink", f"csv://{out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = first_line(run.stdout, 120)
        run.send_signal(signal.SIGINT)
        rest, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, stderr
    records = [json.loads(line) for line in (first + rest).splitlines()]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith(f"himae run: {len(records)} window")
    rows = out.read_text().splitlines()
    assert rows[0].startswith("window,start,end") and [int(r.split(",")[0]) for r in rows[1:]] == [
        r["window"] for r in records], "a stop by Ctrl-C keeps every record written"


def test_a_reader_that_stops_reading_ends_the_run_cleanly(tmp_path):
    """`himae run ... | head -1`: the records written so far replace the file, exit 0."""
    out = tmp_path / "out.csv"
    out.write_text("earlier results\n")
    run = subprocess.Popen(
        [sys.executable, "-m", "himae_stream.cli", "run", "--source", f"sim://{DEMO}?speed=10&loop=1",
         "--sink", f"csv://{out}", "--sink", "jsonl://-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first_line(run.stdout, 120)
        run.stdout.close()  # like `head -1` exiting
        stderr = run.communicate(timeout=60)[1]
    finally:
        run.kill()
    assert run.returncode == 0 and stderr == ""
    rows = out.read_text().splitlines()
    assert rows[0].startswith("window,start,end") and len(rows) >= 2


def test_a_device_lost_mid_run_keeps_the_users_file_and_the_windows_written(tmp_path):
    """A simulated device in its own process, read over its pseudo-terminal, dies after the first window."""
    out = tmp_path / "out.csv"
    out.write_text("earlier results\n")
    sim = subprocess.Popen([sys.executable, "-m", "himae_stream.cli", "sim", "--recording", BUNDLED, "--channels",
                            "PLETH", "--speed", "10"], stdout=subprocess.PIPE, text=True)
    run = None
    try:
        port = next(line for line in iter(lambda: first_line(sim.stdout, 60), "") if line.startswith("source: "))
        run = subprocess.Popen(
            [sys.executable, "-m", "himae_stream.cli", "run", "--source", port.split()[1] + "&reconnect=0",
             "--sink", f"csv://{out}", "--sink", "jsonl://-"],  # csv first: a record on stdout is in the csv too
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        first = first_line(run.stdout, 120)
        sim.kill()  # the device is gone for good
        rest, stderr = run.communicate(timeout=60)
    finally:
        for process in (sim, run):
            if process is not None:
                process.kill()
                process.wait()
    assert run.returncode == 2 and "Traceback" not in stderr, stderr
    assert out.read_text() == "earlier results\n"
    kept = tmp_path / "out.partial.csv"
    assert f"in {kept}" in stderr
    written = [json.loads(line)["window"] for line in (first + rest).splitlines()]
    assert [int(row.split(",")[0]) for row in kept.read_text().splitlines()[1:]] == written


@pytest.mark.parametrize("args, message", [
    (["run", "--speed", "fast"], "--speed: expected a number > 0 or 'max', got 'fast'"),
    (["run", "--source", f"sim://{BUNDLED}?speed=fast"], "parameter speed: expected a number > 0 or 'max', got 'fast'"),
    (["run", "--source", f"sim://{BUNDLED}?loss=2"], "parameter loss: expected a number from 0 to 1, got '2'"),
    (["run", "--source", "serial:///dev/ttyUSB0?baud=fast"], "parameter baud: expected an integer >= 1, got 'fast'"),
    (["run", "--hop", "fast"], "--hop: expected a duration such as '10s'"),
    (["run", "--duration=-3s"], "--duration: expected a duration such as '10s'"),
    (["run", "--source", "file://x.bin", "--speed", "3"], "--speed is for a recording given by its path"),
    (["run", "--source", "file://x.bin", "--fs", "64"], "--fs is for a recording given by its path; give a URL's in "
                                                        "the URL (sim://...?fs=64)"),
    (["run", "--fs", "0"], "--fs: expected a number > 0 and <= 10000, got '0'"),
    (["sim", "--recording", BUNDLED, "--speed", "0"], "--speed: expected a number > 0 or 'max', got '0'"),
    (["sim", "--recording", BUNDLED, "--mtu", "big"], "--mtu: expected an integer from 23 to 517, got 'big'"),
    (["sim", "--recording", BUNDLED, "--drift-ppm", "x"], "--drift-ppm: expected a number, got 'x'"),
    (["embed", BUNDLED, "-o", "x.npz", "--levels", "0,a"], "--levels: expected an integer >= 0, got 'a'"),
    (["plot", BUNDLED, "--gaps", "many"], "--gaps: expected an integer >= 0, got 'many'"),
    (["bench", "--seconds", "0"], "--seconds: expected a number > 0, got '0'"),
    (["run", "--hop", "1e30s"], "--hop: 1e+32 samples is more than a length may be"),
    (["run", "--source", f"sim://{BUNDLED}?fs=1e9"], "parameter fs: expected a number > 0 and <= 10000, got '1e9'"),
    (["run", "--source", f"sim://{BUNDLED}?fs=0"], "parameter fs: expected a number > 0 and <= 10000, got '0'"),
    (["embed", BUNDLED, "-o", "x.npz", "--fs", "nan"], "--fs: expected a number > 0 and <= 10000, got 'nan'"),
])
def test_a_bad_number_is_one_line_naming_the_option(himae, args, message):
    line = one_line_error(himae(*args, timeout=120))
    assert line.startswith(f"himae {args[0]}: error: ") and message in line


@pytest.mark.parametrize("args", [["run", "--source", "file://{fifo}", "--duration", "20s"],
                                  ["run", "--source", "file:///dev/zero", "--duration", "20s"],
                                  ["run", "--source", "sim://{fifo}.hea", "--duration", "20s"],
                                  ["embed", "{fifo}.hea", "-o", "{dir}/e.npz"]])
def test_a_fifo_or_device_is_refused_not_read_for_ever(tmp_path, himae, args):
    """Opening a FIFO blocks until a writer comes, and /dev/zero never ends: neither is a recording."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    os.mkfifo(f"{fifo}.hea")
    line = one_line_error(himae(*(a.format(fifo=fifo, dir=tmp_path) for a in args), timeout=120))
    assert "not a regular file" in line


@pytest.mark.parametrize("given, speed", [([], "speed=1.0&"), (["--speed", "max"], "speed=max&"),
                                          (["--speed", "10"], "speed=10.0&")])
def test_speed_reaches_the_default_source(given, speed):
    """`--speed max` (which parses to None, unpaced) is not taken for `--speed` left out."""
    from himae_stream.cli import build_parser
    from himae_stream.commands.run import source_url

    args = build_parser()[0].parse_args(["run", *given])
    assert speed in source_url(args)


def test_a_recordings_path_as_source_is_replayed_like_the_bundled_one(himae, tmp_path):
    """`--source PATH` (no scheme), or the path alone, replays the recording through the simulator at
    `--speed`, as the default source does (and a path is a source URL in the API too, replayed in real
    time); a port, a folder or a missing file named that way is one line saying so."""
    from himae_stream.cli import build_parser
    from himae_stream.commands.run import source_url
    from himae_stream.urls import parse_source_url

    from himae_stream.commands import take_positionals
    from himae_stream.numbers import OptionError

    def take(args):
        take_positionals(args)
        return args

    parse = build_parser()[0].parse_args
    assert source_url(parse(["run", "--source", BUNDLED])).startswith(f"sim://{BUNDLED}?")
    assert "speed=max&" in source_url(parse(["run", "--source", BUNDLED, "--speed", "max"]))
    assert "speed=1.0&" in source_url(parse(["run", "--source", BUNDLED]))
    assert source_url(take(parse(["run", BUNDLED, "--speed", "max"]))) == source_url(
        parse(["run", "--speed", "max", "--source", BUNDLED]))
    with pytest.raises(OptionError, match=f"SOURCE given twice, as '{BUNDLED}' and --source 'serial:///dev/x': "):
        take(parse(["run", BUNDLED, "--source", "serial:///dev/x"]))
    url = parse_source_url(BUNDLED)
    assert (url.scheme, url.path, url.get("speed")) == ("sim", BUNDLED, "1.0")
    done = himae("run", BUNDLED, "--speed", "max", "--duration", "12s", "--channels", "PLETH", timeout=300)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["window"] for line in done.stdout.splitlines()] == [0, 1, 2, 3, 4]
    np.savez(tmp_path / "nan.npz", signals=np.full((1, 2000), np.nan), fs=100.0)
    for given, message in (("/dev/null", "names a device, not a recording: read it as serial:///dev/null"),
                           (str(tmp_path), "is a folder: a source is one recording (himae embed takes folders)"),
                           (str(tmp_path / "none.npz"), "recording not found"),
                           (str(tmp_path / "nan.npz"), "nan.npz: no sample has a value (every one is NaN or "
                                                       "infinite): nothing to send")):
        line = one_line_error(himae("run", "--source", given, "--speed", "max", timeout=120))
        assert line.startswith("himae run: error: ") and message in line


def test_a_recording_without_a_rate_is_run_at_the_rate_given(himae, tmp_path):
    """A bare .npy (or columns of numbers) states no rate, and the refusal says to give it with --fs or
    fs= in a sim:// URL: `himae run --fs`, `sim://...?fs=` and `himae sim PATH --fs` all read it at that rate."""
    from himae_stream.recordings import RecordingError, load

    samples = np.sin(2 * np.pi * 1.2 * np.arange(1500) / 100).astype(np.float32)
    np.save(tmp_path / "bare.npy", samples)
    bare = str(tmp_path / "bare.npy")
    refused = one_line_error(himae("run", "--source", bare, "--speed", "max", timeout=120))
    assert "carries no sampling rate; give it (--fs, or fs= in a sim:// URL)" in refused
    for args in (["--source", bare, "--fs", "100", "--speed", "max"],
                 ["--source", f"sim://{bare}?fs=100&speed=max"]):
        done = himae("run", *args, "--duration", "10s", timeout=300)
        assert done.returncode == 0, done.stderr
        assert [json.loads(line)["end"] for line in done.stdout.splitlines()] == [800, 900, 1000]
    assert load(bare, default_fs=50.0).fs == 50.0
    assert load(BUNDLED, default_fs=50.0).fs == load(BUNDLED).fs  # a stated rate stays
    with pytest.raises(RecordingError, match="must be a number > 0"):
        load(bare, default_fs=-1.0)
    sim = subprocess.Popen([sys.executable, "-m", "himae_stream.cli", "sim", bare, "--fs", "100"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first_line(sim.stdout, 60).startswith("serial: /dev/")
    finally:
        sim.kill()
        sim.wait()


def test_sim_without_a_recording_replays_the_bundled_one():
    """`himae sim` alone is a device replaying what `himae run` alone reads, and says where it is;
    `himae sim PATH` replays PATH."""
    from firmware_sim.cli import options_from_args
    from himae_stream.cli import build_parser
    from himae_stream.recordings import DEMO

    from himae_stream.commands import take_positionals

    assert options_from_args(build_parser()[0].parse_args(["sim"])).recording == str(DEMO)
    given = build_parser()[0].parse_args(["sim", "rec.csv", "--fs", "64"])
    take_positionals(given)
    assert options_from_args(given).recording == "rec.csv"
    sim = subprocess.Popen([sys.executable, "-m", "himae_stream.cli", "sim"], stdout=subprocess.PIPE, text=True)
    try:
        assert first_line(sim.stdout, 60).startswith("serial: /dev/")
        assert first_line(sim.stdout, 60).startswith("source: serial:///dev/")
    finally:
        sim.kill()
        sim.wait()


def test_a_missing_file_is_its_name_and_what_the_system_said(himae, tmp_path):
    """An OSError reads as "PATH: reason", not Python's "[Errno 2] ...: 'PATH'"; an output that is a
    folder is named once."""
    missing = tmp_path / "nothere.himae"
    line = one_line_error(himae("info", str(missing), timeout=120))
    assert line == f"himae info: error: {missing}: No such file or directory"
    line = one_line_error(himae("embed", BUNDLED, "-o", str(tmp_path), timeout=120))
    assert line == f"himae embed: error: {tmp_path}: a folder, not a file"
