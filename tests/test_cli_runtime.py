"""`himae embed`, `himae plot` and `himae bench` on real recordings, through the CLI."""

import re

import numpy as np
import pytest
from conftest import BUNDLED, ECG_ONLY, WRIST_RUN


@pytest.fixture(scope="module")
def model_file(random_model_file):
    return random_model_file("himae-25")


def test_embed_stream_mode_equals_the_stream_api(tmp_path, model_file, himae):
    """Without --channels the model's PPG rule finds the wrist PPG and PhysioNet's PLETH beside ECG."""
    from himae_stream import load_model, recordings

    out = tmp_path / "emb.npz"
    files = [str(WRIST_RUN), str(BUNDLED)]
    result = himae("embed", *files, "-o", str(out), "--model", model_file, "--hop", "2s")
    assert result.returncode == 0, result.stderr
    z = np.load(out)
    assert list(z["names"]) == ["wrist_s3_run", "a103l"]
    model = load_model(model_file)
    rec = recordings.load(files[1], channels=["PLETH"]).resampled(25)
    stream = model.stream(hop="2s")
    windows = stream.push(rec.signals).windows + stream.flush().windows
    mine = z["level3"][z["recording"] == 1]
    assert mine.shape == (len(windows), 128)
    assert np.array_equal(mine, np.stack([w.embeddings[3] for w in windows]))


def test_embed_stream_mode_in_chunks_gives_one_push_s_windows(monkeypatch, model_file):
    """`himae embed` pushes a recording a few thousand samples at a time (its per-position rows would otherwise
    take memory the size of the recording's): the windows are one whole push's, bit for bit, whatever the hop
    and however the pushes fall against windows and strides."""
    from himae_stream import load_model, recordings
    from himae_stream.commands import embed

    model = load_model(model_file)
    x = recordings.load(str(BUNDLED), channels=["PLETH"]).resampled(model.config["fs"]).signals
    monkeypatch.setattr(embed, "CHUNK_SAMPLES", 333)
    window = model.config["window"]
    assert x.shape[1] > 5 * window
    for hop in (37, window):
        starts, levels, lost = embed.embed_recording(model, x, "stream", window, hop)
        stream = model.stream(window=window, hop=hop)
        windows = stream.push(x).windows + stream.flush().windows
        assert starts.tolist() == [w.start for w in windows]
        assert lost.tolist() == [w.masked_fraction for w in windows]
        for level, got in enumerate(levels):
            assert np.array_equal(got, np.stack([w.embeddings[level] for w in windows]))


def test_embed_window_mode_in_batches_gives_one_batch_s_windows(monkeypatch, model_file):
    """Window mode embeds a few hundred windows a call (a copy of every window would otherwise take ten
    times the recording's memory at a 1-s hop): the same bits as all windows in one call."""
    from himae_stream import load_model, recordings
    from himae_stream.commands import embed

    model = load_model(model_file)
    x = recordings.load(str(BUNDLED), channels=["PLETH"]).resampled(model.config["fs"]).signals
    window, hop = model.config["window"], 37
    monkeypatch.setattr(embed, "WINDOW_BATCH", 8)
    starts, levels, _ = embed.embed_recording(model, x, "window", window, hop)
    assert len(starts) > 3 * 8 and len(starts) % 8 == 1  # a last batch of one window
    whole = model.embed(np.stack([model.normalize(x)[:, s:s + window] for s in starts]).astype(np.float32))
    for got, want in zip(levels, whole, strict=True):
        assert np.array_equal(got, want)


def test_embed_window_mode_keeps_only_asked_levels(tmp_path, model_file, himae):
    out = tmp_path / "emb.npz"
    result = himae("embed", str(WRIST_RUN), "-o", str(out), "--model", model_file,
                   "--channels", "PPG", "--mode", "window", "--levels", "0,2")
    assert result.returncode == 0, result.stderr
    z = np.load(out)
    assert "level0" in z and "level2" in z and "level1" not in z
    assert z["level2"].shape[1] == 64 and np.isfinite(z["level0"]).all()


def test_embed_bad_level_and_short_recording(tmp_path, model_file, himae):
    short = tmp_path / "short.npy"
    np.save(short, np.zeros(100))
    result = himae("embed", str(short), "--fs", "25", "-o", str(tmp_path / "x.npz"), "--model", model_file)
    assert result.returncode == 2 and "100 samples (4.00 s at 25 Hz) are fewer than one 10-s window" in result.stderr
    result = himae("embed", str(short), "--fs", "25", "-o", str(tmp_path / "x.npz"), "--model", model_file,
                   "--levels", "7")
    assert result.returncode == 2 and "--levels" in result.stderr
    result = himae("embed", str(short), "-o", str(tmp_path / "x.npz"), "--model", model_file)
    assert result.returncode == 2 and result.stderr.strip().endswith("carries no sampling rate; give it (--fs)")


def test_embed_failing_to_write_keeps_the_existing_output(tmp_path, model_file, monkeypatch):
    """A write that fails half-way (disk full) leaves the user's file as it was and no partial file."""
    from himae_stream import cli

    out = tmp_path / "emb.npz"
    out.write_bytes(b"the user's earlier embeddings")

    def header_then_fail(entry, header):  # the archive's first array, cut short by a full disk
        entry.write(b"\x93NUMPY half a header")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array_header_1_0", header_then_fail)
    assert cli.main(["embed", str(BUNDLED), "-o", str(out), "--model", model_file]) != 0
    assert out.read_bytes() == b"the user's earlier embeddings"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npz"]


def test_embed_takes_folders_of_recordings(tmp_path, model_file, himae):
    """A folder stands for the recordings under it (as `himae train --data` reads them), sorted; an
    output of `himae embed` in it is no recording."""
    folder = tmp_path / "session"
    (folder / "b").mkdir(parents=True)
    t = np.arange(1500) / 100.0
    for name in ("a.csv", "b/c.csv"):
        np.savetxt(folder / name, np.c_[t, np.sin(2 * np.pi * 1.2 * t)], delimiter=",", header="time,ppg", comments="")
    (folder / "notes.txt").write_text("not a recording")
    out = tmp_path / "e.npz"
    result = himae("embed", str(folder), str(BUNDLED), "-o", str(out), "--model", model_file)
    assert result.returncode == 0, result.stderr
    with np.load(out) as z:
        assert z["names"].tolist() == ["a", "c", "a103l"] and set(z["recording"].tolist()) == {0, 1, 2}
    # run again into the folder it embeds: its own output is what it replaces, not an input; another
    # run's output there is named as such
    inside = folder / "b" / "emb.npz"
    for _ in range(2):
        again = himae("embed", str(folder), str(BUNDLED), "-o", str(inside), "--model", model_file)
        assert again.returncode == 0 and "skipped" not in again.stderr, again.stderr
        with np.load(inside) as z, np.load(out) as first:
            assert z["names"].tolist() == ["a", "c", "a103l"] and np.array_equal(z["level3"], first["level3"])
    out.rename(folder / "earlier.npz")
    again = himae("embed", str(folder), "-o", str(inside), "--model", model_file)
    assert f"skipped {folder / 'earlier.npz'}: embeddings `himae embed` wrote, not a recording" in again.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = himae("embed", str(empty), "-o", str(out), "--model", model_file)
    assert result.returncode == 2 and "no recordings" in result.stderr and result.stderr.count("\n") == 1


def test_embed_skips_and_names_a_folders_recording_shorter_than_a_window(tmp_path, model_file, himae):
    """In a folder, a recording too short for one window is named on stderr and left out; the others'
    windows keep their own recording index; a folder of short ones only fails in one line."""
    folder = tmp_path / "clips"
    folder.mkdir()
    t = np.arange(1500) / 100.0
    for name, seconds in (("a.csv", 15), ("b.csv", 4), ("c.csv", 15)):
        np.savetxt(folder / name, np.c_[t, np.sin(2 * np.pi * 1.2 * t)][: seconds * 100], delimiter=",",
                   header="time,ppg", comments="")
    out = tmp_path / "e.npz"
    result = himae("embed", str(folder), "-o", str(out), "--model", model_file)
    assert result.returncode == 0, result.stderr
    assert f"skipped {folder / 'b.csv'}: 100 samples (4.00 s at 25 Hz, resampled from 100 Hz)" in result.stderr
    assert "(1 skipped)" in result.stdout
    with np.load(out) as z:
        assert z["names"].tolist() == ["a", "c"] and sorted(set(z["recording"].tolist())) == [0, 1]
    (folder / "a.csv").unlink()
    (folder / "c.csv").unlink()
    np.savetxt(folder / "d.csv", np.c_[t, t][:300], delimiter=",", header="time,ppg", comments="")
    result = himae("embed", str(folder), "-o", str(out), "--model", model_file)
    assert result.returncode == 2 and "none of the 2 recordings holds one 10-s window" in result.stderr


def test_embed_skips_and_names_a_folders_recording_it_cannot_read_or_without_the_channel(tmp_path, model_file,
                                                                                         himae):
    """PhysioNet's record 100 holds ECG only, and a .npy of junk is no recording: in a folder beside a PPG
    record each is named on stderr and left out; the PPG record is embedded as alone."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for record in (BUNDLED, ECG_ONLY):
        for part in record.parent.glob(record.stem + ".*"):
            (folder / part.name).symlink_to(part)
    (folder / "junk.npy").write_bytes(b"not numpy")
    result = himae("embed", str(folder), "-o", str(tmp_path / "all.npz"), "--model", model_file)
    assert result.returncode == 0, result.stderr
    assert f"skipped {folder / ECG_ONLY.name}: need 1 channel(s) matching PPG" in result.stderr
    assert f"skipped cannot read recording {folder / 'junk.npy'}" in result.stderr
    assert "(2 skipped)" in result.stdout
    alone = himae("embed", str(BUNDLED), "-o", str(tmp_path / "one.npz"), "--model", model_file)
    with np.load(tmp_path / "all.npz") as z, np.load(tmp_path / "one.npz") as one:
        assert z["names"].tolist() == ["a103l"] and np.array_equal(z["level2"], one["level2"])
    refused = himae("embed", str(ECG_ONLY), "-o", str(tmp_path / "ecg.npz"), "--model", model_file)
    assert refused.returncode == 2 and f"{ECG_ONLY}: need 1 channel(s) matching PPG" in refused.stderr
    assert refused.stderr.strip().endswith("found 0 among MLII, V5; name the channel with --channels")


def test_embed_gives_each_windows_lost_share_and_skips_a_recording_without_values(tmp_path, model_file, himae):
    """Samples without a value (NaN) enter the encoder as 0: each window says what share of it they are,
    the same in both modes; a recording with no value at all is skipped and named (alone: an error)."""
    fs, window, hop = 25, 250, 25  # the model's rate: no resampler widens the gap
    x = np.sin(2 * np.pi * 1.2 * np.arange(40 * fs) / fs)
    x[500:575] = np.nan  # 3 s
    np.save(tmp_path / "gap.npy", x)
    np.save(tmp_path / "none.npy", np.full(40 * fs, np.nan))
    starts = np.arange(0, x.size - window + 1, hop)
    expected = np.clip(np.minimum(starts + window, 575) - np.maximum(starts, 500), 0, None) / window
    for mode in ("stream", "window"):
        out = tmp_path / f"{mode}.npz"
        result = himae("embed", str(tmp_path / "gap.npy"), str(tmp_path / "none.npy"), "--fs", str(fs),
                       "--mode", mode, "-o", str(out), "--model", model_file)
        assert result.returncode == 0, result.stderr
        assert f"skipped {tmp_path / 'none.npy'}: no sample has a value (every one is NaN or infinite)" in result.stderr
        windows = int((expected > 0).sum())
        assert f"(1 skipped), {windows} with lost samples (lost_fraction)" in result.stdout
        with np.load(out) as z:
            assert z["start"].tolist() == starts.tolist() and z["names"].tolist() == ["gap"]
            assert np.array_equal(z["lost_fraction"], expected)
            assert np.isfinite(z["level3"]).all()
    result = himae("embed", str(tmp_path / "none.npy"), "--fs", str(fs), "-o", str(tmp_path / "n.npz"),
                   "--model", model_file)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no sample has a value" in result.stderr


def test_embed_gives_the_lost_shares_himae_run_records_live(tmp_path, model_file, himae):
    """A recording with gaps, replayed live through the simulated device (which sends around the samples
    without a value, so the receiver counts them lost), gets the same lost share per window in `himae run`'s
    records as in `himae embed`'s file."""
    import json

    fs = 25
    x = np.sin(2 * np.pi * 1.2 * np.arange(60 * fs) / fs).astype(np.float32)
    x[300:380] = np.nan  # 3.2 s
    x[900:903] = np.nan  # a packet or so
    npz = tmp_path / "gaps.npz"
    np.savez(npz, signals=x[None], fs=float(fs))
    live = tmp_path / "live.jsonl"
    done = himae("run", "--source", f"sim://{npz}?speed=max&format=float32", "--model", model_file,
                 "--window", "10s", "--no-impute", "-o", str(live), timeout=300)
    assert done.returncode == 0, done.stderr
    records = {r["start"]: r["lost_fraction"] for r in map(json.loads, live.read_text().splitlines())}
    out = tmp_path / "e.npz"
    assert himae("embed", str(npz), "-o", str(out), "--model", model_file).returncode == 0
    with np.load(out) as z:
        offline = dict(zip(z["start"].tolist(), z["lost_fraction"].tolist()))
    assert sorted(records) == sorted(offline) and len(records) == 51
    assert records == offline and sum(v > 0 for v in offline.values()) >= 10


def test_embed_into_a_missing_folder_fails_before_embedding(tmp_path, model_file, himae):
    result = himae("embed", str(BUNDLED), "-o", str(tmp_path / "no" / "e.npz"), "--model", model_file)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "folder" in result.stderr and "does not exist" in result.stderr and "windows" not in result.stdout


def test_plot_writes_a_png(tmp_path, model_file, himae):
    out = tmp_path / "plot.png"
    result = himae("plot", str(BUNDLED), "--model", model_file,
                   "--start", "60s", "--length", "20s", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "filled" in result.stdout


def test_plot_fills_what_a_short_recording_lost(tmp_path, model_file, himae):
    """A recording shorter than the default stretch is plotted whole; its own NaN samples are filled too."""
    t = np.arange(2000) / 100.0
    x = np.sin(2 * np.pi * 1.1 * t)
    x[500:550] = np.nan
    path, out = tmp_path / "short.csv", tmp_path / "plot.png"
    np.savetxt(path, np.c_[t, x], delimiter=",", header="time,ppg", comments="")
    result = himae("plot", str(path), "--model", model_file, "-o", str(out))
    assert result.returncode == 0, result.stderr
    filled, gaps = re.search(r"(\d+) samples in (\d+) gaps filled", result.stdout).groups()
    assert int(filled) > 50 and int(gaps) >= 2 and out.read_bytes()[:4] == b"\x89PNG"
    late = himae("plot", str(path), "--model", model_file, "--start", "30s", "-o", str(out))
    assert late.returncode == 2 and "--start is after the end" in late.stderr


def test_bench_prints_a_row_per_isa(model_file, himae):
    from himae_stream.model import supported_isas, supported_precisions

    result = himae("bench", "--model", model_file, "--seconds", "0.05")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| himae-25")]
    assert [r.split("|")[2].strip() for r in rows] == supported_isas()
    for row in rows:  # each reduced precision the ISA has a kernel for, timed
        isa, reduced = row.split("|")[2].strip(), row.split("|")[-2]
        assert [p.split()[0] for p in reduced.split(",") if p.strip() != "-"] == \
            [p for p in supported_precisions(isa) if p != "f32"]
        assert all(float(p.split()[1]) > 0 for p in reduced.split(",") if p.strip() != "-")
