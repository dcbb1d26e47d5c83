"""Linear probes on frozen per-level window embeddings, and the baselines they face.

Embeddings are what stream mode produces: the encoder runs once over a whole
normalised recording and a window's embedding at level l is the mean of the
level-l activations whose position p (input sample 2^(l+1)·p) falls inside
the window. Probes are ridge (regression) or multinomial logistic
(classification) on standardised embeddings, scored by subject-grouped
cross-validation, with the regularisation chosen by an inner grouped split.
Heads are dicts in the model-file format applied by `himae_stream.probes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize

from himae_stream import probes as heads
from himae_stream.probes import positions  # one definition, the runtime's
from himae_stream.normalize import normalize, validate_spec
from himae_stream.recordings import Recording

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
LOGISTIC_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)
INNER_FOLDS = 3
HR_BAND_HZ = (0.6, 3.5)  # 36 … 210 BPM
RAW_FS = 25.0  # the raw-window baseline sees the window at this rate

#: maps a normalised recording (N,) float32 to per-level activations [(C_l, len_l)]
Encoder = Callable[[np.ndarray], list]


# ---------------------------------------------------------------- embeddings


def prepare(rec: Recording, channel: str, fs: float, normalizer: dict) -> np.ndarray:
    """One channel of a recording at the model rate, through the model's stream normaliser."""
    spec = validate_spec(normalizer)
    if spec["kind"] != "stream":
        raise ValueError("probes use stream-mode embeddings, which need a normaliser of kind 'stream'")
    picked = rec.pick([channel]).resampled(fs)
    return normalize(picked.signals, spec, fs)[0]


def window_embeddings(acts: list, start_s, end_s, fs: float) -> list[np.ndarray]:
    """Per-level mean activations `(n_windows, C_l)` over each window [start_s, end_s)."""
    starts = np.round(np.asarray(start_s) * fs).astype(int)
    ends = np.round(np.asarray(end_s) * fs).astype(int)
    out = []
    for level, a in enumerate(acts):
        rows = []
        for s, e in zip(starts, ends):
            sl = positions(level, s, e, a.shape[1])
            if sl.stop <= sl.start:
                raise ValueError(f"window [{s}, {e}) holds no level-{level} position")
            rows.append(a[:, sl].mean(axis=1))
        out.append(np.array(rows, dtype=np.float64))
    return out


def windows_of(x: np.ndarray, start_s, end_s, fs: float) -> list[np.ndarray]:
    """The samples of each window of a prepared signal."""
    return [x[int(round(s * fs)) : int(round(e * fs))] for s, e in zip(start_s, end_s)]


# ------------------------------------------------------------------ baselines


def spectral_peak_hr(windows: list[np.ndarray], fs: float) -> np.ndarray:
    """Heart rate (BPM) as the strongest spectral peak in 36-210 BPM of each window."""
    out = []
    for w in windows:
        n = 1 << max(15, int(np.ceil(np.log2(len(w)))))
        spectrum = np.abs(np.fft.rfft((w - w.mean()) * np.hanning(len(w)), n))
        freqs = np.fft.rfftfreq(n, 1.0 / fs)
        band = (freqs >= HR_BAND_HZ[0]) & (freqs <= HR_BAND_HZ[1])
        out.append(60.0 * freqs[band][np.argmax(spectrum[band])])
    return np.array(out)


def raw_features(windows: list[np.ndarray], fs: float) -> np.ndarray:
    """Each normalised window averaged down to 25 Hz: the raw-signal baseline's features."""
    factor = max(1, int(round(fs / RAW_FS)))
    n = min(len(w) for w in windows) // factor * factor
    return np.array([w[:n].reshape(-1, factor).mean(axis=1) for w in windows], dtype=np.float64)


# -------------------------------------------------------------------- fitting


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    return mean, np.where(std > 1e-8, std, 1.0)


def fit_ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> dict:
    """Ridge regression on standardised features, as a head (without name/level)."""
    mean, std = _standardise(X)
    Z = (X - mean) / std
    y_mean = float(y.mean())
    w = np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ (y - y_mean))
    return {"kind": "ridge", "mean": mean, "std": std, "weights": w[None, :], "bias": np.array([y_mean]),
            "alpha": alpha}


def fit_logistic(X: np.ndarray, y: np.ndarray, classes: list[str], lam: float) -> dict:
    """Class-balanced multinomial logistic regression with an L2 penalty on standardised features."""
    mean, std = _standardise(X)
    Z = (X - mean) / std
    n, d = Z.shape
    k = len(classes)
    target = np.array([classes.index(v) for v in y])
    onehot = np.eye(k)[target]
    counts = np.bincount(target, minlength=k)
    sw = (n / (k * np.maximum(counts, 1)))[target] / n

    def loss(theta):
        W, b = theta[: k * d].reshape(k, d), theta[k * d :]
        s = Z @ W.T + b
        s -= s.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        g = (np.exp(logp) - onehot) * sw[:, None]
        value = -(sw * (logp * onehot).sum(axis=1)).sum() + 0.5 * lam * (W**2).sum()
        return value, np.concatenate([(g.T @ Z + lam * W).ravel(), g.sum(axis=0)])

    res = minimize(loss, np.zeros(k * d + k), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    W, b = res.x[: k * d].reshape(k, d), res.x[k * d :]
    return {"kind": "logistic", "mean": mean, "std": std, "weights": W, "bias": b, "classes": list(classes),
            "lambda": lam}


@dataclass
class Task:
    """What a probe learns: regression (MAE, or R² for unit-free targets) or classification."""

    name: str
    kind: str  # "ridge" | "logistic"
    metric: str  # "mae" | "r2" | "balanced_accuracy"
    unit: str = ""
    classes: tuple[str, ...] = ()

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "mae"


def fit(task: Task, X: np.ndarray, y: np.ndarray, reg: float) -> dict:
    if task.kind == "ridge":
        return fit_ridge(X, y, reg)
    return fit_logistic(X, y, list(task.classes), reg)


def score(task: Task, y: np.ndarray, pred: np.ndarray) -> float:
    """The task's metric of predictions against labels."""
    if task.metric == "mae":
        return float(np.mean(np.abs(pred.astype(float) - y.astype(float))))
    if task.metric == "r2":
        y, pred = y.astype(float), pred.astype(float)
        return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))
    recalls = [np.mean(pred[y == c] == c) for c in task.classes if np.any(y == c)]
    return float(np.mean(recalls))


def _grid(task: Task) -> tuple[float, ...]:
    return RIDGE_ALPHAS if task.kind == "ridge" else LOGISTIC_LAMBDAS


def _group_folds(groups: np.ndarray, k: int) -> list[np.ndarray]:
    """Split the distinct groups into k folds, deterministically (sorted, round-robin)."""
    names = sorted(set(groups.tolist()))
    return [np.isin(groups, names[i::k]) for i in range(min(k, len(names)))]


def select(task: Task, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """The regularisation strength with the best inner grouped cross-validated score."""
    best, best_reg = None, _grid(task)[0]
    folds = _group_folds(groups, INNER_FOLDS)
    for reg in _grid(task):
        pred = np.empty(len(y), dtype=y.dtype)
        for test in folds:
            pred[test] = heads.predict(fit(task, X[~test], y[~test], reg), X[test])
        s = score(task, y, pred)
        s = s if task.higher_is_better else -s
        if best is None or s > best:
            best, best_reg = s, reg
    return best_reg


def cross_validate(task: Task, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, np.ndarray]:
    """Leave-one-subject-out score and the out-of-fold predictions."""
    pred = np.empty(len(y), dtype=y.dtype)
    for g in sorted(set(groups.tolist())):
        test = groups == g
        reg = select(task, X[~test], y[~test], groups[~test])
        pred[test] = heads.predict(fit(task, X[~test], y[~test], reg), X[test])
    return score(task, y, pred), pred


def fit_head(task: Task, X: np.ndarray, y: np.ndarray, groups: np.ndarray, level: int, **extra) -> dict:
    """The shipped head: regularisation by grouped CV, then fitted on all windows; JSON-ready."""
    head = fit(task, X, y, select(task, X, y, groups))
    head = {"name": task.name, "level": level, **head, **extra}
    for key in ("mean", "std", "weights", "bias"):
        head[key] = np.asarray(head[key], dtype=np.float64).tolist()
    if task.unit:
        head["unit"] = task.unit
    return head


def save_with_heads(src, dst, fitted: list[dict], card: dict | None = None) -> None:
    """Copy a model file to `dst` with `fitted` as its probe heads (and `card`, if given)."""
    from himae_stream import modelfile

    mf = modelfile.read(src)
    for head in fitted:
        heads.validate(head, mf.config["channels"])
    meta = {k: v for k, v in mf.meta.items() if k not in ("name", "channel_names", "normalizer")}
    meta["probes"] = fitted
    if card is not None:
        meta["card"] = card
    modelfile.write(dst, mf.config, mf.tensors, meta)
