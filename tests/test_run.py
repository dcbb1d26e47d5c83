"""`himae run` end to end: simulator → real transport → pipeline → sinks, and its errors."""

import json

import numpy as np
import pytest

from conftest import ble_sim
from himae_stream.pipeline import History

BUNDLED = "himae_stream/data/a103l.hea"


@pytest.fixture(scope="module")
def model_file(random_model_file):
    return random_model_file("himae-100")


def read_records(path):
    return [json.loads(line) for line in open(path)]


def check_records(records, model_channels, count, window=1000):
    assert len(records) == count
    assert [r["window"] for r in records] == list(range(count))
    assert [r["start"] for r in records] == [100 * i for i in range(count)]
    for r in records:
        assert r["end"] - r["start"] == window
        assert [len(e) for e in r["embeddings"]] == model_channels
        assert all(np.isfinite(e).all() for e in r["embeddings"])
        assert r["t_end"] > r["t_start"] > 1.7e9  # Unix seconds
        assert 0 <= r["lost_fraction"] <= 1 and r["latency_ms"] >= 0


def assert_same_records(got_path, want_path, count, rtol, atol):
    """Two runs over the same signal wrote the same windows, none lost, embeddings within tolerance."""
    got, expected = read_records(got_path), read_records(want_path)
    assert len(got) == len(expected) == count
    for g, e in zip(got, expected):
        assert (g["start"], g["end"], g["lost_fraction"]) == (e["start"], e["end"], 0)
        for a, b in zip(g["embeddings"], e["embeddings"]):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_embedded_default(tmp_path, himae):
    """No source, no model: the bundled record through the simulator into the shipped himae-100."""
    out = tmp_path / "out.jsonl"
    result = himae("run", "--duration", "20s", "--speed", "20", "--sink", f"jsonl://{out}")
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    # the shipped heads were fitted on 8 s windows: starts 0, 1, ..., 12 s within 20 s
    check_records(records, [16, 32, 64, 128, 256], 13, window=800)
    # only the heads that beat their classical baselines on data they never saw are in default records
    from himae_stream import modelfile, probes, zoo

    heads = modelfile.read(zoo.resolve("himae-100")).meta["probes"]
    default = {h["name"] for h in heads if probes.is_default(h)}
    for h in heads:
        m = h["metrics"]
        beats = m["lodo"] < m["baseline"] if m["metric"] == "mae" else m["lodo"] > m["baseline"]
        assert probes.is_default(h) <= beats, f"{h['name']} is in default records but lost to {m['baseline_name']}"
    assert "heart_rate" in default
    expected = default | ({"activity_p"} if "activity" in default else set())
    for r in records:
        p = r["predictions"]
        assert set(p) == expected
        assert 30 < p["heart_rate"] < 220
    # every head the file carries, when asked for
    out = tmp_path / "all.jsonl"
    result = himae("run", "--duration", "12s", "--speed", "max", "--all-heads", "--sink", f"jsonl://{out}")
    assert result.returncode == 0, result.stderr
    for r in read_records(out):
        p = r["predictions"]
        assert set(p) == {"heart_rate", "quality", "activity", "activity_p"}
        assert 0 <= p["quality"] <= 1 and p["activity"] == max(p["activity_p"], key=p["activity_p"].get)
        assert set(p["activity_p"]) == {"rest", "active"} and abs(sum(p["activity_p"].values()) - 1) < 1e-9


@pytest.mark.parametrize("transport, rate", [("serial", ""), ("ble", "&fs=100")])
def test_run_writes_one_record_per_hop(tmp_path, model_file, transport, rate, himae):
    """Serial at the record's own 250 Hz (resampled live to 100 Hz), BLE at 100 Hz."""
    out = tmp_path / "out.jsonl"
    source = f"sim://{BUNDLED}?channels=PLETH&transport={transport}&speed=5{rate}"
    result = himae("run", "--model", model_file, "--source", source, "--duration", "20s",
                   "--sink", f"jsonl://{out}")
    assert result.returncode == 0, result.stderr
    # 20 s at a 10 s window and 1 s hop: windows start at 0, 1, ..., 10 s
    check_records(read_records(out), [16, 32, 64, 128, 256], 11)
    assert "11 windows" in result.stderr and "lost 0" in result.stderr


def test_run_fills_gaps_from_a_lossy_device(tmp_path, model_file, himae):
    out, csv_out = tmp_path / "out.jsonl", tmp_path / "out.csv"
    source = f"sim://{BUNDLED}?channels=PLETH&speed=max&fs=100&loss=0.05&seed=3"
    result = himae("run", "--model", model_file, "--source", source, "--duration", "30s",
                   "--sink", f"jsonl://{out}", "-o", str(csv_out))  # a bare path: the format from its extension
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert len(records) == 21
    assert sum(r["lost_fraction"] for r in records) > 0
    filled = [r for r in records if r["imputed"]]
    assert filled, "a 5 % lossy stream must produce imputed samples"
    indices = [i for r in filled for i in r["fill"]["index"]]
    assert len(indices) == len(set(indices)), "each lost sample is filled once"
    assert all(np.isfinite(r["fill"]["values"]).all() for r in filled)
    header = open(csv_out).readline().strip().split(",")
    assert header[:3] == ["window", "start", "end"] and "e4_255" in header


def test_a_window_other_than_the_heads_one_is_noted(tmp_path, himae):
    """The shipped heads were fitted on one window length: another one still runs, with a one-line note."""
    source = f"sim://{BUNDLED}?channels=PLETH&speed=max"
    notes = []
    for extra in ([], ["--window", "10s"]):
        result = himae("run", "--model", "himae-25", "--source", source, "--duration", "12s",
                       "--sink", f"jsonl://{tmp_path / 'out.jsonl'}", *extra)
        assert result.returncode == 0, result.stderr
        notes.append([line for line in result.stderr.splitlines() if "note:" in line])
    assert notes[0] == [] and len(notes[1]) == 1
    assert "fitted on 8-s windows" in notes[1][0] and "10-s windows are not validated" in notes[1][0]


def test_gaps_at_the_ends_of_a_stream_are_filled(tmp_path, model_file, himae):
    """Lost samples before the first window's centre and after the last one's are filled too, once each."""
    t = np.arange(3000) / 100.0
    x = np.sin(2 * np.pi * 1.2 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    gone = np.zeros(t.size, bool)
    gone[100:200] = gone[-250:-150] = True
    x[gone] = np.nan
    path, out = tmp_path / "gaps.csv", tmp_path / "out.jsonl"
    np.savetxt(path, np.c_[t, x], delimiter=",", header="time,ppg", comments="")
    result = himae("run", "--model", model_file, "--source", f"sim://{path}?speed=max", "--sink", f"jsonl://{out}")
    assert result.returncode == 0, result.stderr
    assert "lost 200, imputed 200," in result.stderr + result.stdout
    records = read_records(out)
    indices = [i for r in records if r["imputed"] for i in r["fill"]["index"]]
    assert sorted(indices) == np.flatnonzero(gone).tolist()
    assert records[0]["imputed"] == 100 and records[-1]["imputed"] == 100


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "nope://x"], "unknown source scheme"),
        (["--source", ""], "--source is empty"),
        (["--source", "sim://missing.hea"], "not found"),
        (["--source", "serial:///dev/does-not-exist"], "does-not-exist"),
        (["--sink", "ftp://x"], "unknown sink"),
        (["-o", "out.txt"], "nor a file ending in .jsonl"),
        (["--hop", "fast"], "hop"),
    ],
)
def test_bad_input_is_one_line_exit_2(model_file, args, message, himae):
    result = himae("run", "--model", model_file, "--duration", "20s", *args, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_unreadable_model_is_one_line(tmp_path, himae):
    bad = tmp_path / "bad.himae"
    bad.write_bytes(b"not a model")
    result = himae("run", "--model", str(bad), "--duration", "1s", timeout=60)
    assert result.returncode == 2
    assert "truncated" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_history_is_bounded_and_indexed_by_sample():
    h = History(1, capacity=10)
    buffer = h.samples
    for start in range(0, 1000, 7):
        n = np.arange(start, start + 7, dtype=np.float32)
        h.add(n[None, :], n % 3 == 0, n.astype(np.float64))
        assert h.held <= h.lost.size == 40  # bounded: four times the capacity
        samples, lost, times = h.span(start - 10, start + 7)  # the capacity before the chunk, and the chunk
        want = np.arange(start - 10, start + 7)
        want = want[want >= 0]
        assert samples[0].tolist() == want.tolist() and times.tolist() == want.tolist()
        assert lost.tolist() == (want % 3 == 0).tolist()
    assert h.samples is buffer, "steady chunks must reuse the buffer"
    big = np.arange(1001, 1101, dtype=np.float32)  # one chunk longer than the spare room
    h.add(big[None, :], np.zeros(100, bool), big.astype(np.float64))
    samples, _, times = h.span(991, 1101)
    assert samples[0].tolist() == list(range(991, 1101)) and h.held == 110
    assert h.span(0, 5)[0].shape == (1, 0), "forgotten samples are not returned"


def test_run_blocking_python_api(model_file):
    import himae_stream

    url = f"sim://{BUNDLED}?channels=PLETH&speed=max&fs=100"
    records = list(himae_stream.run_blocking(url, model=model_file, hop="2s", duration=14.0))
    # 14 s at a 10 s window and 2 s hop: windows start at 0, 2 and 4 s
    assert [r["start"] for r in records] == [0, 200, 400]


def test_quiet_gc_freezes_what_is_loaded_and_changes_no_record():
    """`himae run`'s garbage-collector policy: once the source delivers, everything loaded (model, compiled
    normaliser, the source's libraries) is frozen out of the collector's passes, so no full pass over it
    lands in a record's latency; the records are the same."""
    import gc

    import himae_stream

    url = f"sim://{BUNDLED}?speed=max&duration=40"
    same = ("window", "start", "end", "lost_fraction", "predictions", "embeddings", "imputed")
    gc.unfreeze()  # `himae run` called in this process by another test froze it
    plain = [{k: r[k] for k in same} for r in himae_stream.run_blocking(url, hop="2s")]
    assert gc.get_freeze_count() == 0
    try:
        quiet = [{k: r[k] for k in same} for r in himae_stream.run_blocking(url, hop="2s", quiet_gc=True)]
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert frozen > 50_000
    assert len(quiet) == len(plain) == 17  # 8-s windows every 2 s in 40 s
    for a, b in zip(plain, quiet):
        # between chunks the engine and the heads sum ahead what the next chunk completes, so the last bits
        # follow the chunking, which a replay at full speed does not fix
        np.testing.assert_allclose(a.pop("predictions")["heart_rate"], b.pop("predictions")["heart_rate"], rtol=1e-6)
        for u, v in zip(a.pop("embeddings"), b.pop("embeddings")):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
        assert a == b


def test_each_record_says_where_its_latency_went():
    """The stages (read, wait, engine, heads, record) of every record add up to its latency."""
    import asyncio

    from himae_stream.pipeline import STAGES, run

    async def records():
        core = []
        got = [r async for r in run(f"sim://{BUNDLED}?speed=max", "himae-100", hop="1s", duration=12.0,
                                    pipeline=core)]
        return got, list(core[0].stages)

    got, stages = asyncio.run(records())
    assert len(got) == len(stages) == 5 and all(len(s) == len(STAGES) for s in stages)
    for record, parts in zip(got, stages):
        assert min(parts) >= 0
        assert sum(parts) == pytest.approx(record["latency_ms"], abs=2e-3)  # the record rounds to 1e-4 ms


@pytest.mark.parametrize("speed", ["5", "max"])
def test_closing_run_blocking_early_ends_the_pipeline_and_its_source(model_file, speed):
    """A caller that stops after one record: close() cancels the pipeline, the simulated device
    and its reader stop, and no thread is left behind (it used to wait for the next record and
    leave the pump blocked on a full queue)."""
    import threading

    import himae_stream

    before = set(threading.enumerate())
    records = himae_stream.run_blocking(f"sim://{BUNDLED}?speed={speed}", model=model_file, hop="0.1s")
    first = next(records)
    assert first["window"] == 0
    if speed == "max":  # let the pump fill the queue: it must not stay blocked on it
        for _ in range(1100):
            next(records)
    records.close()
    left = [t for t in threading.enumerate() if t not in before]
    assert not left, f"threads still running after close(): {left}"


@pytest.fixture
def ble_device():
    """`himae sim --transport ble` in its own process, serving its controller on loopback TCP."""
    with ble_sim("--recording", BUNDLED, "--channels", "PLETH", "--transport", "ble", "--speed", "5", "--fs", "100",
                 "--name", "himae-test-wearable") as sim:
        assert sim.source == f"ble://name=himae-test-wearable?hci={sim.hci}"
        yield sim.hci


def test_run_from_a_ble_device_in_another_process(tmp_path, model_file, ble_device, himae):
    out = tmp_path / "out.jsonl"
    result = himae("run", "--model", model_file, "--source", f"ble://name=himae-test-*?hci={ble_device}",
                   "--duration", "12s", "--sink", f"jsonl://{out}")
    assert result.returncode == 0, result.stderr
    check_records(read_records(out), [16, 32, 64, 128, 256], 3)


def test_ble_device_not_found_is_one_line(model_file, ble_device, himae):
    result = himae("run", "--model", model_file, "--source",
                   f"ble://name=no-such-wearable?hci={ble_device}&scan_timeout=2&reconnects=1", "--duration", "20s",
                   timeout=60)  # one retry: the path that gives up, without five rounds of backoff
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "no-such-wearable" in result.stderr
    assert "giving up after 2 tries" in result.stderr


def test_heart_rate_sensor_is_refused_with_a_reason(model_file, ble_device, himae):
    result = himae("run", "--model", model_file, "--source", f"ble://name=himae-test-*?hci={ble_device}&service=hr",
                   "--duration", "20s", timeout=60)
    assert result.returncode == 2 and "not a waveform" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sinks_write_the_same_records(tmp_path, model_file):
    """The pipeline's records (float32 embedding arrays) written to JSON lines, CSV and NPZ read back
    equal, value for value."""
    from himae_stream import load_model, recordings
    from himae_stream.pipeline import Pipeline
    from himae_stream.samplestream import Chunk
    from himae_stream.sinks import open_sink

    x = recordings.load(BUNDLED, channels=["PLETH"]).resampled(100).signals[:, :1500].astype(np.float32)
    pipe = Pipeline(load_model(model_file), hop="1s")
    records = []
    for i in range(0, x.shape[1], 37):
        n = min(37, x.shape[1] - i)
        records += pipe.feed(Chunk(np.arange(i, i + n) / 100.0, x[:, i : i + n], np.zeros(n, bool), i))
    # 10-s windows every 1 s, complete once the deepest level's delay has passed
    assert len(records) == (1500 - max(pipe.stream.delay) - 1000) // 100 + 1 == 4
    assert all(e.dtype == np.float32 for r in records for e in r["embeddings"])
    paths = {kind: tmp_path / f"out.{kind}" for kind in ("jsonl", "csv", "npz")}
    sinks = [open_sink(f"{kind}://{path}") for kind, path in paths.items()]
    for record in records:
        for sink in sinks:
            sink.write(record)
    for sink in sinks:
        sink.close()
    want = [np.concatenate(r["embeddings"]) for r in records]
    jsonl = [np.concatenate(r["embeddings"]).astype(np.float32) for r in read_records(paths["jsonl"])]
    rows = np.loadtxt(paths["csv"], delimiter=",", skiprows=1, dtype=str)
    csv_values = rows[:, -len(want[0]):].astype(np.float32)
    z = np.load(paths["npz"])
    npz = np.concatenate([z[f"level{l}"] for l in range(5)], axis=1)
    for got in (jsonl, csv_values, npz):
        assert np.array_equal(np.stack(got), np.stack(want))
    assert z["start"].tolist() == [r["start"] for r in records]
