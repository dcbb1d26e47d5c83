"""The shipped report is reproducible and says plainly where a classical method wins; the heads
the model files show by default are the ones that beat their baselines on data they never saw."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, WRIST_BIKE, WRIST_RUN, WRIST_WALK

from himae_stream.cli import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "docs" / "resolution-report.json"
TASKS = ("heart_rate", "quality", "activity")


def test_report_subset_reproduces_the_shipped_numbers(data_dir, tmp_path, capsys):
    """Two data sets, himae-25: the read-outs that need no fitting (classical baselines, one-level
    spectral heads on the principal directions of TROIKA's training recordings) on each data set
    equal the shipped report's."""
    shipped = json.loads(SHIPPED.read_text())
    assert shipped["command"].startswith("himae probe himae-100 himae-25 --data")
    out = tmp_path / "report.md"
    code = main(["probe", "himae-25", "--data", str(data_dir), "--datasets", "TROIKA,BUT_PPG",
                 "--report", str(out)])
    assert code == 0
    assert "heart_rate (spectral" in capsys.readouterr().out
    assert out.with_suffix(".png").stat().st_size > 1000
    rerun = json.loads(out.with_suffix(".json").read_text())["models"]["himae-25"]["result"]["heart_rate"]
    theirs = shipped["models"]["himae-25"]["result"]["heart_rate"]["datasets"]
    for ds in ("BUT_PPG", "TROIKA", "TROIKA test"):
        ours = rerun["datasets"][ds]
        assert ours["windows"] == theirs[ds]["windows"]
        for key in ("spectral_peak", "peak_interval"):
            assert ours[key] == pytest.approx(theirs[ds][key], rel=1e-6), (ds, key)
        np.testing.assert_allclose(ours["per_level"], theirs[ds]["per_level"], rtol=1e-4)
    assert "Where a classical method wins" in out.read_text()


def test_report_says_what_ships_and_the_model_files_agree():
    from himae_stream import modelfile, probes, zoo

    text = (REPO / "docs" / "resolution-report.md").read_text()
    report = json.loads(SHIPPED.read_text())
    assert "Regenerate" in text.splitlines()[2] and report["command"] in text
    for name, model in report["models"].items():
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        ships = [t for t in TASKS if model["result"][t]["ship"]]
        assert f"Heads in default records: {', '.join(ships) or 'none'}." in section
        assert section.count("Where a classical method wins") == 3
        r = model["result"]["heart_rate"]
        for t in TASKS:  # the rule: a head ships only if it beats its baseline on unseen data
            o = model["result"][t]["overall"]
            base = o.get("spectral_peak", o.get("purity", o.get("baseline")))
            beats = o["head"] < base if t == "heart_rate" else o["head"] > base
            assert model["result"][t]["ship"] <= beats, t
        if r["ship"] and "TROIKA test" in r["datasets"]:
            assert r["datasets"]["TROIKA test"]["head"] <= r["datasets"]["TROIKA test"]["spectral_peak"]
        heads = {h["name"]: h for h in modelfile.read(zoo.resolve(name)).meta["probes"]}
        assert {t: probes.is_default(heads[t]) for t in TASKS} == {t: model["result"][t]["ship"] for t in TASKS}


def test_report_command_on_a_small_subset(tmp_path):
    """Fixture cuts posing as three data sets: features, LODO evaluation, report files, heads that load."""
    import himae_stream
    from himae_stream import probes
    from training import corpus
    from training import heads as H
    from training import report as rendering
    from training.frozen import load_model_file
    from himae_stream import zoo

    path = zoo.resolve("himae-25")
    model = load_model_file(path)
    items = corpus.fixture_items([WRIST_RUN, WRIST_WALK, WRIST_BIKE])
    for item, name in zip(items, ("A", "B", "C")):
        item.dataset = name
    items[1].activity[:20] = "rest"
    f = H.features(model, path, None, None, items=items)
    assert set(f["corruption"]) >= {"", "flat", "noise"}
    result = H.evaluate(f, model.config)
    assert set(result["heart_rate"]["datasets"]) == {"A", "B", "C"}
    shown = result["heart_rate"]["shown"]  # the rate as records show it: withheld where the quality head doubts
    assert result["heart_rate"]["head"]["withheld_below"] == {"head": "quality", "probability": H.HR_SHOWN_FROM}
    assert set(shown["datasets"]) == {"A", "B", "C"} and all(0 <= t["shown"] <= 1 for t in shown["datasets"].values())
    assert set(shown["corruptions"]) == set(H.CORRUPTIONS)
    why = {t: H.why(t, result[t]) for t in TASKS}
    written = rendering.write_lodo({"command": "himae probe test", "date": "today", "models": {
        "himae-25": {"file": path.name, "result": result, "why": why}}}, tmp_path / "r.md")
    assert [p.exists() for p in written] == [True] * 3
    fitted = H.shipped_heads(result)
    for head in fitted:
        probes.validate(head, model.config["channels"])
    out = tmp_path / "m.himae"
    from training.probes import save_with_heads

    save_with_heads(path, out, fitted, H.card({"summary": "x; y"}, result, "himae-25"))
    assert himae_stream.load_model(out).metadata["card"]["heads"]["quality"] == why["quality"]
    assert "heart rate as records show it" in written[0].read_text()


def test_probe_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["probe", "himae-25"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["probe", "himae-25", "--data", str(FIXTURES), "--tasks", "sleep"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["probe", "himae-25", "--data", str(FIXTURES), "--datasets", "Fitbit"]) == 2
    assert "unknown data set" in capsys.readouterr().err
    assert main(["probe", "himae-25", "--data", str(FIXTURES), "--levels", "7"]) == 2
    assert "levels 0" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    labels.write_text("recording,start,end,label\nnot_there,0,8,1\n")
    rec = WRIST_RUN
    assert main(["probe", "himae-25", "--recordings", str(rec), "--labels", str(labels)]) == 2
    assert "no labels for recording" in capsys.readouterr().err


def test_probe_cli_fits_csv_labels_and_saves_heads(tmp_path, capsys):
    """Your own recordings and a label CSV: heads land in a copy of the model that both loaders accept."""
    import himae_stream
    from himae_stream import modelfile, probes

    recs = [WRIST_RUN, WRIST_WALK, WRIST_BIKE]
    rows = ["recording,start,end,label"]
    for rec in recs:  # the ECG heart rate of each 8-s window, 2 s apart
        z = np.load(rec)
        rows += [f"{rec.name},{s},{s + 8},{v}" for s, v in zip(z["hr_ref_t_start_s"], z["hr_ref"])]
    labels = tmp_path / "pulse.csv"
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "mine.himae"
    code = main(["probe", "himae-25", "--recordings", *map(str, recs), "--labels", str(labels),
                 "--levels", "1,2", "--save", str(out)])
    assert code == 0
    assert "pulse: MAE" in capsys.readouterr().out
    (head,) = modelfile.read(out).meta["probes"]
    assert head["name"] == "pulse" and head["kind"] == "ridge" and head["level"] in (1, 2)
    probes.validate(head, himae_stream.load_model(out).config["channels"])
