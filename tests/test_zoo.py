"""The shipped models: found by name, valid for both loaders, carrying a card and probe heads
whose runtime predictions equal the probe code's on the same windows."""

import json

import numpy as np
import pytest
from conftest import WRIST_RUN

import himae_stream
from himae_stream import modelfile, probes, zoo
from himae_stream.cli import main
from himae_stream.headplan import Heads
from himae_stream.recordings import load

SHIPPED = ("himae-100", "himae-25")
TASKS = {"heart_rate", "activity", "quality"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_valid_small_and_documented(name, capsys):
    path = zoo.resolve(name)
    assert path == zoo.MODELS_DIR / f"{name}.himae" and path.stat().st_size <= 6 * 1024 * 1024
    mf = modelfile.read(path)  # the Python reader's checks
    engine = himae_stream.load_model(name)  # the C loader's checks, by name
    card = mf.meta["card"]
    assert engine.config["name"] == mf.config["name"] == name
    assert {h["name"] for h in mf.meta["probes"]} == TASKS
    for head in mf.meta["probes"]:
        probes.validate(head, mf.config["channels"])
        assert head["window_s"] == 8.0
        if not probes.is_default(head):  # the card says why it is out of default records
            assert head["name"] in card["heads"] and "NOT in default records" in card["heads"][head["name"]]
    assert card["date"] and card["data"] and card["metrics"]["heart_rate"]["metric"] == "mae"
    assert main(["info", name]) == 0
    out = capsys.readouterr().out
    assert card["summary"] in out and "TROIKA" in out and "HR MAE" in out


def test_resolve_names_and_paths(tmp_path):
    assert zoo.resolve(None) == zoo.resolve("himae-100")
    other = tmp_path / "mine.himae"
    assert zoo.resolve(other) == other  # a path is passed through for the loader to judge
    with pytest.raises(FileNotFoundError, match="himae-100, himae-25|himae-25, himae-100"):
        zoo.resolve("himae-7")


@pytest.mark.parametrize("name,device_fs", [("himae-25", 25.0), ("himae-100", 125.0)])
def test_himae_run_predictions_match_the_probe_code(tmp_path, name, device_fs):
    """`himae run` (simulated device, C stream mode, 8-s windows every 2 s, heads applied by
    himae_stream.probes) gives the predictions `himae probe` computes (PyTorch over the whole
    recording) for the same windows, also when the device's rate is not the model's: the
    pipeline resamples live with the resampler the offline code uses."""
    from training.frozen import load_model_file
    from training.probes import prepare
    from training.resolution import encode

    rec = load(WRIST_RUN).pick(["PPG"]).resampled(device_fs)
    npz = tmp_path / "device.npz"
    np.savez(npz, signals=rec.signals.astype(np.float32), fs=device_fs, channel_names=np.array(["PPG"]))
    out = tmp_path / "out.jsonl"
    code = main(["run", "--source", f"sim://{npz}?speed=max&format=float32", "--model", name,
                 "--window", "8s", "--hop", "2s", "--no-impute", "--sink", f"jsonl://{out}"])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 57  # 8-s windows every 2 s over 120 s
    model = load_model_file(zoo.resolve(name))
    fs = model.config["fs"]
    start = np.array([r["start"] for r in records]) / fs
    assert np.allclose(np.diff(start), 2.0) and start[0] == 0.0

    acts = encode(model, prepare(load(npz), "PPG", fs, model.config["normalizer"]))
    span = int(round(8.0 * fs))
    windows = [[a[:, probes.positions(l, int(round(s * fs)), int(round(s * fs)) + span, a.shape[1])]
                for l, a in enumerate(acts)] for s in start]
    shown = [h for h in model.meta["probes"] if probes.is_default(h)]
    assert shown, "a shipped model shows at least one head by default"
    offline_records = Heads(model.meta["probes"], fs).apply(windows, [span] * len(windows))
    for head in model.meta["probes"]:
        if not probes.is_default(head):  # left out of records unless asked for (`--all-heads`)
            assert all(head["name"] not in r["predictions"] for r in records)
            continue
        runtime = [r["predictions"][head["name"]] for r in records]
        offline = [r[head["name"]] for r in offline_records]
        assert [v is None for v in runtime] == [v is None for v in offline]  # withheld in the same windows
        runtime = [np.nan if v is None else v for v in runtime]
        offline = [np.nan if v is None else v for v in offline]
        if head["kind"] == "logistic":
            assert np.mean(np.array(runtime) == np.array(offline)) > 0.99
        else:  # records round to 4 decimals
            np.testing.assert_allclose(np.array(runtime, float), np.array(offline, float), rtol=0, atol=2e-4)


def _live_predictions(name: str, signal: np.ndarray, fs: float) -> list[dict]:
    """Records of the live pipeline (all heads) for one PPG signal at `fs`: 8-s windows every 2 s."""
    from himae_stream.pipeline import Pipeline
    from himae_stream.samplestream import Chunk

    core = Pipeline(himae_stream.load_model(name), window="8s", hop="2s", impute=False, all_heads=True)
    core.select(["PPG"], fs)
    n = signal.size
    chunk = Chunk(np.arange(n) / fs, signal[None].astype(np.float32), np.zeros(n, bool), 0, None)
    return core.feed(chunk) + core.finish()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_quality_drops_on_contact_loss_and_heavy_noise(name):
    """The bundled finger PPG, clean; then the same with the contact lost (a flat line) or buried in
    noise from 30 s on: quality is at least 0.2 lower on the spoiled windows."""
    from conftest import BUNDLED

    heads = {h["name"]: h for h in modelfile.read(zoo.resolve(name)).meta["probes"]}
    if heads.get("quality", {}).get("kind") != "probability":
        pytest.skip("this model's quality head is not a probability")
    rec = load(BUNDLED).pick(["PLETH"])
    fs = rec.fs
    clean = rec.signals[0, : int(90 * fs)]
    flat, noisy = clean.copy(), clean.copy()
    flat[int(30 * fs):] = flat[int(30 * fs)]
    noisy[int(30 * fs):] += 3 * np.std(clean) * np.random.default_rng(0).normal(size=noisy.size - int(30 * fs))

    rate = himae_stream.load_model(name).config["fs"]

    def quality(signal):  # windows from 10 s after the change to the end of the signal
        records = _live_predictions(name, signal, fs)
        q = [r["predictions"]["quality"] for r in records if r["start"] >= 40 * rate and r["end"] <= 88 * rate]
        assert len(q) >= 20
        return np.mean([0.0 if v is None else v for v in q])

    base = quality(clean)
    assert base - quality(flat) >= 0.2
    assert base - quality(noisy) >= 0.2


def test_live_heads_read_ahead_between_pushes_and_give_the_same_records():
    """Fed 0.1 s at a time with `prepare()` between pushes, as `himae run` feeds a live device, the
    pipeline computes the heads' shallow levels of coming windows ahead (`Heads.ahead_at`); its
    predictions are those of the same signal pushed at once (every level computed with the record)."""
    from conftest import BUNDLED
    from himae_stream.pipeline import Pipeline
    from himae_stream.samplestream import Chunk

    rec = load(BUNDLED).pick(["PLETH"]).resampled(100.0)
    signal = rec.signals[:, : 4000].astype(np.float32)
    model = himae_stream.load_model("himae-100")

    def pipeline():
        core = Pipeline(model, hop="0.5s", impute=False, all_heads=True)
        core.select(["PLETH"], 100.0)
        return core

    live, whole = pipeline(), pipeline()
    records = []
    for i in range(0, signal.shape[1], 10):
        records += live.feed(Chunk(np.arange(i, i + 10) / 100.0, signal[:, i : i + 10], np.zeros(10, bool), i))
        live.prepare()
    records += live.finish()
    n = signal.shape[1]
    at_once = whole.feed(Chunk(np.arange(n) / 100.0, signal, np.zeros(n, bool), 0)) + whole.finish()
    assert len(records) == len(at_once) == 65
    assert live._ahead.puts >= 60 and live._ahead.held() == 0  # read ahead for nearly every window, each taken
    assert whole._ahead.puts == 0
    for a, b in zip(records, at_once):
        pa, pb = a["predictions"], b["predictions"]
        assert pa.keys() == pb.keys() and pa["activity"] == pb["activity"]
        values = [[p["heart_rate"] or np.nan, p["quality"], *p["activity_p"].values()] for p in (pa, pb)]
        np.testing.assert_allclose(*values, rtol=0, atol=2e-4)
