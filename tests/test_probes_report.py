"""The shipped resolution report is reproducible: rerun a subset, compare with the shipped numbers."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, WRIST_BIKE, WRIST_RUN, WRIST_WALK

from himae_stream.cli import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "docs" / "resolution-report.json"
LEVEL = 2


def test_report_subset_reproduces_the_shipped_numbers(data_dir, tmp_path, capsys):
    shipped = json.loads(SHIPPED.read_text())
    assert shipped["command"].startswith("himae probe himae-100 himae-25 --data")
    out = tmp_path / "report.md"
    code = main(["probe", "himae-25", "--data", str(data_dir), "--tasks", "heart_rate,quality",
                 "--levels", str(LEVEL), "--report", str(out)])
    assert code == 0
    assert "heart rate" in capsys.readouterr().out
    assert out.with_suffix(".png").stat().st_size > 1000
    rerun = json.loads(out.with_suffix(".json").read_text())["models"]["himae-25"]["tasks"]
    for task in ("heart_rate", "quality"):
        ours, theirs = rerun[task], shipped["models"]["himae-25"]["tasks"][task]
        i = theirs["levels"].index(LEVEL)
        assert ours["windows"] == theirs["windows"] and ours["subjects"] == theirs["subjects"]
        for encoder in ("pretrained", "random"):
            assert ours[encoder][0] == pytest.approx(theirs[encoder][i], rel=1e-3, abs=1e-3), (task, encoder)
        assert ours["raw"] == pytest.approx(theirs["raw"], rel=1e-3, abs=1e-3)
    spectral = shipped["models"]["himae-25"]["tasks"]["heart_rate"]["spectral"]
    assert rerun["heart_rate"]["spectral"] == pytest.approx(spectral)


def test_report_states_plainly_whether_pretraining_helps():
    from training.report import TASK_TITLES

    text = (REPO / "docs" / "resolution-report.md").read_text()
    for name, model in json.loads(SHIPPED.read_text())["models"].items():
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for task, r in model["tasks"].items():
            p = r["pretrained"][r["levels"].index(r["pretrained_best_level"])]
            q = r["random"][r["levels"].index(r["random_best_level"])]
            helps = p > q if r["higher_is_better"] else p < q
            line = next(l for l in section.splitlines() if l.startswith(f"**{TASK_TITLES[task]}**"))
            assert ("pretraining helps" if helps else "pretraining does NOT help") in line, line


def test_probe_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["probe", "himae-25"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["probe", "himae-25", "--data", str(FIXTURES), "--tasks", "sleep"]) == 2
    assert "unknown task" in capsys.readouterr().err
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
