"""The resolution report: which encoder level answers which question.

For every task and level, the subject-grouped cross-validated probe score of
the pretrained encoder and of a randomly initialised one with the same
architecture, next to two baselines that need no encoder: the spectral peak
of the window (heart rate only) and a ridge / logistic model on the raw
normalised window down-sampled to 25 Hz. Probes and baselines see the same
windows: the TROIKA 8-s windows every 2 s. The TROIKA test recordings are never
used for fitting; heads fitted on all training windows are scored on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from himae_stream import probes as heads
from himae_stream.recordings import Recording, RecordingError, load, match_channels
from training import labels as lab
from training.model import HiMAE
from training.probes import Task, cross_validate, fit, fit_head, prepare, raw_features, score, select
from training.probes import spectral_peak_hr, window_embeddings, windows_of
from training.quality import fill_comparison, quality_target

TASKS = {
    "heart_rate": Task("heart_rate", "ridge", "mae", unit="BPM"),
    "activity": Task("activity", "logistic", "balanced_accuracy", classes=lab.ACTIVITY_CLASSES),
    "quality": Task("quality", "ridge", "r2", unit="log10 masked-reconstruction MSE"),
}
METRIC_NAMES = {"mae": "MAE", "r2": "R²", "balanced_accuracy": "balanced accuracy"}


@dataclass
class Source:
    """One recording channel and the labels it carries; `split` is "probe" or "test"."""

    rec: Recording
    split: str
    labels: dict[str, lab.WindowLabels] = field(default_factory=dict)


def pick_channel(rec: Recording, patterns=None) -> Recording:
    """The one channel a 1-channel PPG model reads: the first match of `patterns`, or the runtime's rule."""
    index = match_channels(rec.channel_names, patterns, 1, ["PPG"])[0]
    return rec.pick([rec.channel_names[index]])


def troika_sources(data_dir: Path, channels=None) -> list[Source]:
    """The shared recordings: TROIKA training + extra (probe), TROIKA test (test), PhysioNet PLETH (probe)."""
    data_dir = Path(data_dir)
    troika = data_dir / "troika"
    train = sorted((troika / "Training_data").glob("DATA_*_TYPE0?.mat"))
    extra = sorted((troika / "Extra_TrainingData").glob("DATA_S*_T*.mat"))
    test = sorted((troika / "TestData").glob("TEST_S*_T*.mat"))
    if not train:
        raise RecordingError(f"no TROIKA training recordings under {troika}")
    out = []
    for path, split in [*((p, "probe") for p in train + extra), *((p, "test") for p in test)]:
        rec = pick_channel(load(path), channels)
        src = Source(rec, split, {"heart_rate": lab.troika_hr(path, rec.duration_s)})
        if path in train:
            src.labels["activity"] = lab.troika_activity(path, rec.duration_s)
        out.append(src)
    for name in ("a103l", "v102s"):
        if (data_dir / "physionet" / f"{name}.hea").exists():
            out.append(Source(pick_channel(load(data_dir / "physionet" / name), channels), "probe"))
    return out


def csv_sources(recordings: list[Path], labels_csv: Path, task: str, channels=None) -> list[Source]:
    """User recordings labelled by a CSV (recording, start, end, label), all for probing."""
    by_name = lab.read_csv(labels_csv)
    out = []
    for path in recordings:
        rec = pick_channel(load(path), channels)
        if rec.name not in by_name:
            raise ValueError(f"{labels_csv}: no labels for recording {rec.name!r}")
        out.append(Source(rec, "probe", {task: lab.within(by_name[rec.name], rec.duration_s)}))
    missing = set(by_name) - {s.rec.name for s in out}
    if missing:
        raise ValueError(f"{labels_csv}: labels for recordings not given: {', '.join(sorted(missing))}")
    return out


def csv_task(labels: list[lab.WindowLabels], name: str) -> Task:
    values = np.concatenate([w.values for w in labels])
    if values.dtype == object:
        return Task(name, "logistic", "balanced_accuracy", classes=tuple(sorted(set(values.tolist()))))
    return Task(name, "ridge", "mae")


def random_encoder(config: dict, seed: int) -> HiMAE:
    """The randomly initialised baseline encoder: same architecture, seeded init, eval mode."""
    torch.manual_seed(seed)
    return HiMAE(config).eval()


def encode(model: HiMAE, x: np.ndarray) -> list[np.ndarray]:
    """Whole-recording encoder activations `[(C_l, len_l)]`: what stream mode emits."""
    with torch.no_grad():
        return [a[0].numpy().astype(np.float64) for a in model.encode(torch.from_numpy(x)[None, None])]


@dataclass
class Rows:
    """One task's windows stacked over recordings."""

    pretrained: list[list[np.ndarray]] = field(default_factory=list)  # per recording, per level
    random: list[list[np.ndarray]] = field(default_factory=list)
    raw: list[np.ndarray] = field(default_factory=list)
    spectral: list[np.ndarray] = field(default_factory=list)
    y: list[np.ndarray] = field(default_factory=list)
    groups: list[np.ndarray] = field(default_factory=list)
    split: list[np.ndarray] = field(default_factory=list)

    def stacked(self) -> dict:
        n_levels = len(self.pretrained[0])
        return {
            "pretrained": [np.concatenate([r[l] for r in self.pretrained]) for l in range(n_levels)],
            "random": [np.concatenate([r[l] for r in self.random]) for l in range(n_levels)],
            **{k: np.concatenate(getattr(self, k)) for k in
               ("raw", "spectral", "y", "groups", "split")},
        }


def quality_windows(duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """8-s windows every 2 s over a whole recording, the TROIKA grid."""
    n = int((duration_s - lab.BPM_WINDOW / lab.TROIKA_FS) // (lab.BPM_STEP / lab.TROIKA_FS)) + 1
    return lab.bpm_windows(max(n, 0))


def collect(model: HiMAE, sources: list[Source], tasks: list[str], seed: int = 0) -> dict[str, dict]:
    """Per task, the stacked window features of the pretrained and random encoders, and labels."""
    cfg = model.config
    fs = float(cfg["fs"])
    random = random_encoder(cfg, seed)
    rows = {t: Rows() for t in tasks}
    for src in sources:
        x = prepare(src.rec, src.rec.channel_names[0], fs, cfg["normalizer"])
        acts, acts_random = encode(model, x), encode(random, x)
        for task in tasks:
            if task == "quality":
                start, end = quality_windows(len(x) / fs)
                if not len(start):
                    continue
                y = quality_target(model, x, start, end, seed)
            elif task in src.labels:
                w = src.labels[task]
                start, end, y = w.start_s, w.end_s, w.values
            else:
                continue
            win = windows_of(x, start, end, fs)
            r = rows[task]
            r.pretrained.append(window_embeddings(acts, start, end, fs))
            r.random.append(window_embeddings(acts_random, start, end, fs))
            r.raw.append(raw_features(win, fs))
            r.spectral.append(spectral_peak_hr(win, fs))
            r.y.append(np.asarray(y))
            r.groups.append(np.full(len(y), src.rec.subject, dtype=object))
            r.split.append(np.full(len(y), src.split, dtype=object))
    return {t: r.stacked() for t, r in rows.items() if r.y}


def _held_out(task: Task, X: np.ndarray, y: np.ndarray, groups: np.ndarray, probe: np.ndarray):
    """Fit on every probe window (regularisation by grouped CV), score on the test windows."""
    test = ~probe
    if not test.any():
        return None
    head = fit(task, X[probe], y[probe], select(task, X[probe], y[probe], groups[probe]))
    return score(task, y[test], heads.predict(head, X[test]))


def best(task: Task, values: list[float]) -> int:
    return int(np.argmax(values) if task.higher_is_better else np.argmin(values))


def evaluate(task: Task, t: dict, levels: list[int]) -> dict:
    """Cross-validated scores per level (pretrained, random), baselines, and the held-out test."""
    probe = t["split"] == "probe"
    y, groups = t["y"], t["groups"]
    result: dict = {"metric": task.metric, "unit": task.unit, "higher_is_better": task.higher_is_better,
                    "levels": levels, "windows": int(probe.sum()), "subjects": len(set(groups[probe].tolist())),
                    "test_windows": int((~probe).sum())}
    for enc in ("pretrained", "random"):
        result[enc] = [cross_validate(task, t[enc][l][probe], y[probe], groups[probe])[0] for l in levels]
        result[f"{enc}_best_level"] = levels[best(task, result[enc])]
        lb = result[f"{enc}_best_level"]
        result[f"{enc}_test"] = _held_out(task, t[enc][lb], y, groups, probe)
    result["raw"] = cross_validate(task, t["raw"][probe], y[probe], groups[probe])[0]
    result["raw_test"] = _held_out(task, t["raw"], y, groups, probe)
    if task.name == "heart_rate":
        result["spectral"] = score(task, y[probe], t["spectral"][probe])
        result["spectral_test"] = score(task, y[~probe], t["spectral"][~probe]) if (~probe).any() else None
    return result


def shipped_head(task: Task, t: dict, level: int, result: dict) -> dict:
    """The head stored in the model file: fitted on all probe windows at the best level."""
    probe = t["split"] == "probe"
    metrics = {"metric": task.metric, "cv": result["pretrained"][result["levels"].index(level)]}
    if result.get("pretrained_test") is not None:
        metrics["test"] = result["pretrained_test"]
    return fit_head(task, t["pretrained"][level][probe], t["y"][probe], t["groups"][probe], level,
                    window_s=lab.BPM_WINDOW / lab.TROIKA_FS, metrics=metrics)


def reconstruction(model: HiMAE, sources: list[Source], subjects: set[str] | None, seed: int = 0) -> dict:
    """Masked-reconstruction MSE of HiMAE, linear interpolation and zero fill on held-out recordings.

    Held out = the TROIKA test recordings plus, if given, the pretraining validation subjects.
    """
    cfg = model.config
    held = [s for s in sources if s.split == "test" or (subjects and s.rec.subject in subjects)]
    signals = [prepare(s.rec, s.rec.channel_names[0], float(cfg["fs"]), cfg["normalizer"]) for s in held]
    out = fill_comparison(model, signals, seed)
    out["recordings"] = [s.rec.name for s in held]
    return out


def probe_model(model: HiMAE, sources: list[Source], tasks: list[Task], levels: list[int] | None = None,
                seed: int = 0) -> tuple[dict, list[dict]]:
    """Scores of every task × level (`evaluate`) and the heads to ship, one per task at its best level."""
    from threadpoolctl import threadpool_limits

    levels = list(range(len(model.config["channels"]))) if levels is None else list(levels)
    by_name = {t.name: t for t in tasks}
    # Many small solves: one BLAS thread is much faster than two contending ones.
    with threadpool_limits(1):
        tables = collect(model, sources, list(by_name), seed)
        results, fitted = {}, []
        for name, t in tables.items():
            results[name] = evaluate(by_name[name], t, levels)
            fitted.append(shipped_head(by_name[name], t, results[name]["pretrained_best_level"], results[name]))
    return results, fitted


def model_report(model: HiMAE, sources: list[Source], tasks: list[Task], levels: list[int] | None = None,
                 seed: int = 0) -> tuple[dict, list[dict]]:
    """One model's report entry (task scores, reconstruction on held-out recordings) and its heads."""
    results, fitted = probe_model(model, sources, tasks, levels, seed)
    entry: dict = {"tasks": results}
    if "quality" in results:
        val = set((getattr(model, "meta", {}).get("provenance") or {}).get("val_subjects") or [])
        entry["reconstruction"] = reconstruction(model, sources, val, seed)
    return entry, fitted
