"""The shipped models: found by name, valid for both loaders, carrying a card and probe heads
whose runtime predictions equal the probe code's on the same windows."""

import numpy as np
import pytest

import himae_stream
from himae_stream import modelfile, probes, zoo
from himae_stream.cli import main
from himae_stream.recordings import load

SHIPPED = ("himae-100", "himae-25")
TASKS = {"heart_rate", "activity", "quality"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_valid_small_and_documented(name, capsys):
    path = zoo.resolve(name)
    assert path == zoo.MODELS_DIR / f"{name}.himae" and path.stat().st_size <= 6 * 1024 * 1024
    mf = modelfile.read(path)  # the Python reader's checks
    engine = himae_stream.load_model(name)  # the C loader's checks, by name
    assert engine.config["name"] == mf.config["name"] == name
    assert {h["name"] for h in mf.meta["probes"]} == TASKS
    for head in mf.meta["probes"]:
        probes.validate(head, mf.config["channels"])
        assert head["window_s"] == 8.0
    card = mf.meta["card"]
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


def test_stream_mode_predictions_match_the_probe_code(data_dir):
    """What `himae run` computes (C stream mode, 8-s windows every 2 s, heads applied by
    himae_stream.probes) equals what `himae probe` computes (PyTorch over the whole recording)."""
    from training.frozen import load_model_file
    from training.probes import prepare, window_embeddings
    from training.resolution import encode

    path = zoo.resolve("himae-25")
    rec = load(data_dir / "troika" / "TestData" / "TEST_S01_T01.mat").pick(["PPG1"])
    fs = 25.0

    stream = himae_stream.load_model(path).stream(window="8s", hop="2s")
    x = rec.resampled(fs).signals
    windows = []
    for i in range(0, x.shape[1], 317):  # odd chunk size: chunking must not matter
        windows += stream.push(x[:, i : i + 317]).windows
    windows += stream.flush().windows
    start = np.array([w.start for w in windows]) / fs
    assert np.allclose(np.diff(start), 2.0) and start[0] == 0.0

    model = load_model_file(path)
    acts = encode(model, prepare(rec, "PPG1", fs, model.config["normalizer"]))
    reference = window_embeddings(acts, start, start + 8.0, fs)
    for head in model.meta["probes"]:
        level = head["level"]
        runtime = probes.predict(head, np.array([w.embeddings[level] for w in windows]))
        offline = probes.predict(head, reference[level])
        if head["kind"] == "ridge":
            np.testing.assert_allclose(runtime.astype(float), offline.astype(float), rtol=1e-4, atol=1e-3)
        else:
            assert np.mean(runtime == offline) > 0.99
