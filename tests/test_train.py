"""Masked pretraining: exact masking, masked-only loss, schedule, resume, early stop, DDP parity."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import WRIST_RUN, WRIST_WALK
import torch

from training import HiMAE, get_config
import training.train as train_module
from training.data import load_datasets
from training.train import TrainOptions, batch_masks, batch_windows, lr_factor, masked_mse, train

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,overrides,hidden", [
    ("himae-100", {}, 800),
    ("himae-25", {}, 200),
    ("himae-25", {"window": 252, "patch_size": 4, "mask_ratio": 0.5}, 128),
])
def test_masking_ratio_is_exact_per_window(name, overrides, hidden):
    config = get_config(name, **overrides)
    masks = batch_masks(50, config, np.random.default_rng(7))
    assert masks.shape == (50, config["window"])
    assert (masks.sum(axis=1) == hidden).all()
    p = config["patch_size"]
    patches = masks[:, : config["window"] // p * p].reshape(50, -1, p)
    assert (patches.all(axis=2) | ~patches.any(axis=2)).all(), "patches are hidden whole"
    assert len({m.tobytes() for m in masks}) == 50, "every window gets its own mask"


def test_loss_ignores_unmasked_samples_and_zeroes_them_in_the_input():
    config = get_config("himae-25")
    model = HiMAE(config)
    x = torch.rand(4, 1, 250) * 2 - 1
    mask = torch.from_numpy(batch_masks(4, config, np.random.default_rng(0)))
    seen = {}
    model.register_forward_pre_hook(lambda m, args: seen.update(inp=args[0].clone()))

    def keep_output(module, args, out):
        out.retain_grad()
        seen["out"] = out

    model.register_forward_hook(keep_output)
    loss = masked_mse(model, x, mask)
    loss.backward()
    hidden = mask[:, None, :]
    assert (seen["inp"][hidden.expand_as(x)] == 0).all()
    assert torch.equal(seen["inp"][~hidden.expand_as(x)], x[~hidden.expand_as(x)])
    grad = seen["out"].grad
    assert (grad[~hidden.expand_as(x)] == 0).all()
    assert (grad[hidden.expand_as(x)] != 0).float().mean() > 0.99
    want = ((seen["out"] - x)[hidden.expand_as(x)] ** 2).mean()
    torch.testing.assert_close(loss, want)


def test_learning_rate_warms_up_then_decays():
    f = [lr_factor(s, 10, 100, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:10], f[1:10]))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(100, 10, 100, 0.01) == pytest.approx(0.01)


def _options(out, **kw) -> TrainOptions:
    base = dict(config=get_config("himae-25"), warmup_steps=1, data=[str(WRIST_RUN), str(WRIST_WALK)],
                out=str(out), stride=250, batch_size=8, max_steps=4, epochs=5, val_fraction=0.5,
                eval_every=2, device="cpu", progress=False, seed=3)
    base.update(kw)
    return TrainOptions(**base)


def same_run(first, second) -> tuple[dict, dict]:
    """The last checkpoints of two runs, asserted to hold the same loss curves and weights."""
    a = torch.load(first / "last.pt", weights_only=True)
    b = torch.load(second / "last.pt", weights_only=True)
    assert a["state"]["history"] == b["state"]["history"]
    assert a["state"]["val_history"] == b["state"]["val_history"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    return a, b


def test_resume_continues_exactly(tmp_path):
    straight = train(_options(tmp_path / "a"))
    train(_options(tmp_path / "b", max_steps=2))
    resumed = train(_options(tmp_path / "b", resume=True))
    assert straight["steps"] == resumed["steps"] == 4
    a, b = same_run(tmp_path / "a", tmp_path / "b")
    assert a["provenance"]["val_subjects"] and a["provenance"]["windows"]["train"] > 0


def test_a_crash_resumes_exactly_from_the_timed_checkpoint(tmp_path, monkeypatch):
    """last.pt is written between evaluations too (every step here); a run killed mid-interval resumes
    from it and ends where an uninterrupted run ends."""
    kw = dict(max_steps=6, epochs=10, eval_every=4, checkpoint_minutes=0)
    straight = train(_options(tmp_path / "a", **kw))
    calls = {"n": 0}
    real = train_module.masked_mse

    def crash_at_fourth_step(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real(*args)

    monkeypatch.setattr(train_module, "masked_mse", crash_at_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        train(_options(tmp_path / "b", **kw))
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["state"]["step"] == 3, "checkpointed after step 3, not only at the step-4 evaluation"
    monkeypatch.setattr(train_module, "masked_mse", real)
    resumed = train(_options(tmp_path / "b", resume=True, **kw))
    assert straight["steps"] == resumed["steps"] == 6
    a, b = same_run(tmp_path / "a", tmp_path / "b")
    strip = lambda curve: [{k: v for k, v in row.items() if k != "wall_s"} for row in curve]  # noqa: E731
    assert strip(a["state"]["curve"]) == strip(b["state"]["curve"])


def test_learning_curve_is_saved(tmp_path):
    summary = train(_options(tmp_path, max_steps=4, eval_every=2))
    rows = (tmp_path / "curve.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,train_loss,val_loss,lr,wall_s"
    table = np.array([[float(v) for v in r.split(",")] for r in rows[1:]])
    assert table[:, 0].tolist() == [2, 4]
    assert np.all(table[:, 2:] > 0) and table[1, 5] >= table[0, 5]
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert min(r["val_loss"] for r in curve) == pytest.approx(summary["best_val_loss"])
    assert set(curve[0]["val_by_dataset"]) == {"data"}  # the fixtures' folder is their data set
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["train_wall_s"] > 0 and summary["windows_by_dataset"]["train"]["data"] == summary["train"]


def test_augmented_batches_do_not_depend_on_the_process_split():
    opts = _options("unused")
    config = opts.config
    train_set, _ = load_datasets(opts.data, config, stride=250, val_fraction=0)
    positions = np.arange(8) % len(train_set)
    whole = batch_windows(train_set, positions, 0, config, opts, step=5)
    halves = np.concatenate([batch_windows(train_set, positions[:4], 0, config, opts, step=5),
                             batch_windows(train_set, positions[4:], 4, config, opts, step=5)])
    np.testing.assert_array_equal(whole, halves)
    assert not np.array_equal(whole, batch_windows(train_set, positions, 0, config, opts, step=6))
    assert whole.shape == (8, 1, 250) and np.isfinite(whole).all()


def test_early_stopping_follows_validation(tmp_path):
    summary = train(_options(tmp_path, lr=0.3, max_steps=40, eval_every=1, patience=2))
    vals = [v for _, v in torch.load(tmp_path / "last.pt", weights_only=True)["state"]["val_history"]]
    best, bad, stop_at = float("inf"), 0, None
    for i, v in enumerate(vals):
        bad = 0 if v < best else bad + 1
        best = min(best, v)
        if bad >= 2:
            stop_at = i + 1
            break
    assert stop_at is not None and summary["steps"] == stop_at < 40
    assert summary["best_val_loss"] == pytest.approx(best)


def test_torchrun_two_processes_follow_the_single_process_loss_curve(tmp_path):
    args = ["train", "--config", "himae-25", "--data", WRIST_RUN, "--data", WRIST_WALK,
            "--val-fraction", "0.5", "--window-stride", "250",
            "--max-steps", "6", "--eval-every", "3", "--batch-size", "8", "--warmup-steps", "2",
            "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    runs = {
        "one": [sys.executable, "-m", "himae_stream.cli"],
        "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "himae_stream.cli"],
    }
    ckpt = {}
    for name, launch in runs.items():
        result = subprocess.run([*launch, *map(str, args), "--out", str(tmp_path / name)],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        ckpt[name] = torch.load(tmp_path / name / "last.pt", weights_only=True)
    a, b = ckpt["one"], ckpt["two"]
    assert a["provenance"]["processes"] == 1 and b["provenance"]["processes"] == 2
    curve_a, curve_b = np.array(a["state"]["history"]), np.array(b["state"]["history"])
    assert len(curve_a) == len(curve_b) == 6
    assert np.abs(curve_a - curve_b).max() <= 1e-4
    assert curve_a[-1] < curve_a[0], "the model learns"
    val_a, val_b = np.array(a["state"]["val_history"]), np.array(b["state"]["val_history"])
    assert val_a.shape == val_b.shape == (2, 2) and np.abs(val_a - val_b).max() <= 1e-4


def test_reconstruction_scores_per_data_set_on_the_run_s_validation_subjects(tmp_path):
    from training.export import export_model, load_checkpoint
    from training.pretrain_eval import main as evaluate

    train(_options(tmp_path / "run", max_steps=2))
    export_model(load_checkpoint(tmp_path / "run" / "best.pt"), tmp_path / "m.himae")
    assert evaluate([str(tmp_path / "run" / "best.pt"), str(tmp_path / "m.himae"),
                     "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    per = scores["models"][str(tmp_path / "m.himae")]
    assert set(per) == {"data", "all"} and per["all"]["windows"] == per["data"]["windows"] > 0
    assert per["all"]["himae"] > 0 and per["all"]["linear"] > 0
    assert scores["val_subjects"] == torch.load(tmp_path / "run" / "best.pt", weights_only=True)["provenance"]["val_subjects"]


def test_the_decoder_alone_learns_from_a_model_file(tmp_path):
    """Started from a model file with the encoder frozen: the exported encoder is the file's, bit for bit
    (so every embedding and head stays), the decoder moves, and the masked loss goes down."""
    from himae_stream import modelfile
    from training.export import export_model, load_checkpoint

    start = tmp_path / "start.himae"
    torch.manual_seed(0)
    export_model(HiMAE(get_config("himae-25")).eval(), start)
    kw = dict(init=str(start), trainable="decoder", max_steps=6, eval_every=3, lr=3e-3)
    train(_options(tmp_path / "run", **kw))
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["provenance"]["init"]["trainable"] == "decoder" and ckpt["provenance"]["init"]["sha256"]
    val = [v for _s, v in ckpt["state"]["val_history"]]
    assert val[-1] < val[0], val
    export_model(load_checkpoint(tmp_path / "run" / "last.pt"), tmp_path / "tuned.himae")
    before, after = modelfile.read(start).tensors, modelfile.read(tmp_path / "tuned.himae").tensors
    assert before.keys() == after.keys()
    for name in before:
        same = np.array_equal(before[name], after[name])
        assert same == name.startswith("encoder."), name


def test_the_decoder_alone_needs_a_model_file_to_start_from(tmp_path):
    with pytest.raises(ValueError, match="needs a model file"):
        train(_options(tmp_path, trainable="decoder"))
    other = tmp_path / "other.himae"
    from training.export import export_model

    export_model(HiMAE(get_config("himae-100")).eval(), other)
    with pytest.raises(ValueError, match="configuration is not the run's"):
        train(_options(tmp_path, init=str(other)))


def test_the_shipped_recipe_trains_the_decoder_after_pretraining(tmp_path, monkeypatch):
    """`training.pretrain_defaults`: pretrain, export, then the recipe's decoder stage from that file;
    the exported file's encoder is the pretrained one and its provenance names the stage."""
    from himae_stream import modelfile
    from training import pretrain_defaults as recipes

    tiny = {"max_steps": 2, "stride": 250, "val_stride": 250, "lr": 1e-3, "batch_size": 8, "eval_every": 2,
            "patience": 2, "decoder": {"max_steps": 2, "lr": 1e-3, "eval_every": 2}}
    monkeypatch.setitem(recipes.RECIPES, "himae-25", tiny)
    data = tmp_path / "data"
    data.mkdir()
    for fixture in (WRIST_RUN, WRIST_WALK):
        (data / fixture.name).symlink_to(fixture)
    out = tmp_path / "file.himae"
    wall = recipes.pretrain("himae-25", data, tmp_path / "runs", out)
    assert wall > 0
    tuned = modelfile.read(out)
    assert tuned.meta["provenance"]["init"]["trainable"] == "decoder"
    from training.export import export_model, load_checkpoint

    export_model(load_checkpoint(tmp_path / "runs" / "himae-25" / "best.pt"), tmp_path / "pretrained.himae")
    pretrained = modelfile.read(tmp_path / "pretrained.himae").tensors
    for name, values in pretrained.items():
        assert np.array_equal(values, tuned.tensors[name]) == name.startswith("encoder."), name
    assert "decoder fine-tuned 2 more steps" in recipes.card("himae-25", tuned.meta["provenance"], None, wall, 1)["summary"]
