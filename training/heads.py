"""The heads a record shows, fitted and scored leave-one-dataset-out beside classical baselines.

For one model file: every labelled window of the corpus (`training.corpus`),
plus synthetic corruptions of clean windows (contact loss, clipping, heavy
noise, motion bursts), through the model's normaliser and the pretrained
encoder and a randomly initialised twin; per window and level, the features
the runtime heads read (`himae_stream.probes`: band spectra of the
activations, mean, std and spectral purity over positions), and the classical
read-outs of the normalised signal itself (spectral peak, peak intervals,
spectral purity). Cached under runs/ so refitting costs seconds.

Every head is fitted on all data sets but one and scored on that one, for
each data set in turn; the shipped head is fitted on all of them. A head goes
into default records only if it beats its classical baseline on the data it
never saw (`ship`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from scipy.signal import find_peaks

from himae_stream import probes as P
from himae_stream.recordings import Recording
from training import corpus as C
from training.probes import fit_logistic, prepare

BAND = P.HR_BAND_HZ
AGREE_BPM = 10.0  # a window "supports a correct heart rate" when its PPG's spectral peak is this close
CORRUPTIONS = ("flat", "clip", "noise", "motion")
CLEAN_PER_RECORDING = 2
LAMBDA = 1e-2
ACTIVITY_LAMBDAS = (1.0, 10.0)
#: a coin's score: the balanced accuracy of a two-class head, the AUC of a probability; a head at or below it
#: on a held-out data set is no better than a coin there
CHANCE = 0.5
REST_DATASETS = ("AIST", "BUT_PPG")  # recordings at rest from devices in no other data set
TIE_BPM = 0.1  # level sets this close to the best count as equal; the cheapest is taken
#: a window's heart rate is shown only where the quality head gives at least this P(clean): below it,
#: the model judges the rate more likely wrong than right (a sensor off the skin, heavy noise)
HR_SHOWN_FROM = 0.5
POOL = ["mean", "std"]
#: the quality head's candidates, chosen inside each fold: the purity alone, or with the std over
#: positions of each channel of level 0 (contact loss and noise show at the finest scale first)
QUALITY_STD_LEVELS = ((), (0,))
CACHE_VERSION = 4
BASIS_RANK = 8  # principal directions per level that spectra and purity read


# ------------------------------------------------------------- corruptions


def corrupt(x: np.ndarray, kind: str, fs: float, start: int, rng: np.random.Generator) -> np.ndarray:
    """`x` (raw device samples) with samples from `start` on corrupted as `kind`."""
    y = np.asarray(x, dtype=np.float64).copy()
    seg = y[start:]
    sigma = float(np.std(x)) or 1.0
    if kind == "flat":  # contact lost: the sensor reads a constant
        seg[:] = seg[0] + 1e-3 * sigma * rng.normal(size=seg.size)
    elif kind == "clip":  # saturated: most samples at the rail
        seg[:] = np.minimum(seg, np.percentile(x, 15))
    elif kind == "noise":  # heavy broadband noise, SNR about -10 dB
        seg += 3.0 * sigma * rng.normal(size=seg.size)
    elif kind == "motion":  # bursts of large slow swings
        t = np.arange(seg.size) / fs
        at = 0.0
        while at < t[-1]:
            length = rng.uniform(1.0, 2.5)
            inside = (t >= at) & (t < at + length)
            f1, f2 = rng.uniform(0.5, 4.0, 2)
            wave = np.sin(2 * np.pi * f1 * t[inside] + rng.uniform(0, 6.3)) + 0.5 * np.sin(2 * np.pi * f2 * t[inside])
            seg[inside] += rng.uniform(3, 8) * sigma * wave * np.hanning(inside.sum())
            at += length + rng.uniform(0.0, 1.5)
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    return y


def synthetic(items: list[C.Item], clean: list[np.ndarray], seed: int = 0) -> list[C.Item]:
    """Corrupted copies of up to two clean windows per recording: 28-s cuts, corrupted from 8 s before
    the window on, labelled not clean (`good` 0); `activity`/`hr` unknown."""
    rng = np.random.default_rng(seed)
    out = []
    for item, ok in zip(items, clean):
        fs = item.rec.fs
        raw = item.rec.signals[0]
        picks = [i for i in np.flatnonzero(ok) if item.start_s[i] >= 16 and (item.start_s[i] + 20) * fs <= raw.size]
        for i in picks[:: max(1, len(picks) // CLEAN_PER_RECORDING)][:CLEAN_PER_RECORDING]:
            a = int(round((item.start_s[i] - 16) * fs))
            cut = raw[a : a + int(round(28 * fs))]
            for kind in CORRUPTIONS:
                rec = Recording(f"{item.rec.name}~{kind}@{item.start_s[i]:g}", item.rec.subject, fs, ["PPG"],
                                corrupt(cut, kind, fs, int(round(8 * fs)), rng)[None])
                new = C._item(item.dataset, rec, item.split, [16.0], good=[0.0])
                new.corruption = kind
                out.append(new)
    return out


# ------------------------------------------------------------- read-outs


def peak_interval_hr(w: np.ndarray, fs: float) -> float:
    """60 / median interval between the pulse peaks of a normalised window (BPM); NaN if too few."""
    peaks, _ = find_peaks(w, distance=max(1, int(fs * 60 / 210)), prominence=0.3 * (np.std(w) or 1.0))
    rr = np.diff(peaks) / fs
    return 60.0 / float(np.median(rr)) if rr.size >= 2 else float("nan")


def signal_readouts(w: np.ndarray, fs: float) -> tuple[float, float, float]:
    """Classical read-outs of one normalised window: spectral-peak HR, peak-interval HR, purity."""
    power, df = P.level_power(w[None], -1, fs, w.size)  # level -1: stride 1, the signal itself
    s = P.band_spectrum(power, df, BAND)
    return 60.0 * P.peak_rate(s, df, BAND), peak_interval_hr(w, fs), P.purity(power, df)


def window_features(acts: list, start, end, fs: float, basis: list) -> dict:
    """Per level: band spectra `(n, bins)` and purity `(n,)` of the activations projected on the
    level's `basis`, mean and std `(n, C)` over positions, for windows [start, end) (samples)."""
    out = {"spectrum": [], "mean": [], "std": [], "purity": []}
    for level, (a, b) in enumerate(zip(acts, basis)):
        spec, mean, std, pur = [], [], [], []
        bins = None
        for s, e in zip(start, end):
            sl = P.positions(level, s, e, a.shape[1])
            w = a[:, sl]
            power, df = P.level_power(w, level, fs, e - s, P.PAD, b)
            if bins is None:  # the bins of level 0 of this window length: what a spectral head uses
                df0 = P.level_power(np.zeros((1, 2)), 0, fs, e - s)[1]
                bins = int(math.floor(BAND[1] / df0 + 1e-9)) - int(math.ceil(BAND[0] / df0 - 1e-9)) + 1
            spec.append(P.band_spectrum(power, df, BAND, bins))
            mean.append(w.mean(axis=1))
            std.append(w.std(axis=1))
            pur.append(P.purity(power, df))
        out["spectrum"].append(np.array(spec, np.float32))
        out["mean"].append(np.array(mean, np.float32))
        out["std"].append(np.array(std, np.float32))
        out["purity"].append(np.array(pur, np.float32))
    return out


def principal_bases(encode, items: list[C.Item], fs: float, normalizer: dict, rank: int = BASIS_RANK) -> list:
    """Per level, the `rank` leading principal directions `(rank, C_l)` of the window-centred
    activations of `items` (unlabelled: the encoder's own pretraining recordings)."""
    cov = None
    for item in items:
        x = prepare(item.rec, item.rec.channel_names[0], fs, normalizer)
        acts = encode(x)
        if cov is None:
            cov = [np.zeros((a.shape[0], a.shape[0])) for a in acts]
        for s in np.round(item.start_s * fs).astype(int):
            e = s + int(round(C.WINDOW_S * fs))
            if e > len(x):
                continue
            for level, a in enumerate(acts):
                w = a[:, P.positions(level, s, e, a.shape[1])]
                w = w - w.mean(axis=1, keepdims=True)
                cov[level] += w @ w.T
    out = []
    for c in cov:
        values, vectors = np.linalg.eigh(c)
        top = vectors[:, ::-1][:, : min(rank, c.shape[0])].T
        out.append(top * np.sign(top[:, :1] + 1e-30))  # a fixed sign, so files are reproducible
    return out


# ---------------------------------------------------------------- features


def _encoders(model, seed: int):
    from training.resolution import encode, random_encoder

    random = random_encoder(model.config, seed)
    return lambda x: encode(model, x), lambda x: encode(random, x)


def basis_items(items: list[C.Item]) -> list[C.Item]:
    """The recordings the principal directions come from: TROIKA's training recordings (the
    pretraining data), else every fitted recording given."""
    troika = [i for i in items if i.dataset == "TROIKA" and i.split == "fit" and i.rec.name.startswith("DATA_")]
    return troika or [i for i in items if i.split == "fit" and getattr(i, "corruption", "") == ""]


def extract(model, items: list[C.Item], seed: int = 0) -> dict:
    """Stacked features of every window of `items`, for the pretrained and the random encoder."""
    cfg = model.config
    fs = float(cfg["fs"])
    enc, enc_random = _encoders(model, seed)
    basis = {"pretrained": principal_bases(enc, basis_items(items), fs, cfg["normalizer"]),
             "random": principal_bases(enc_random, basis_items(items), fs, cfg["normalizer"])}
    rows: dict = {"pretrained": [], "random": [], "signal": [], "meta": []}
    for k, item in enumerate(items):
        x = prepare(item.rec, item.rec.channel_names[0], fs, cfg["normalizer"])
        start = np.round(item.start_s * fs).astype(int)
        end = np.round(item.end_s * fs).astype(int)
        keep = end <= len(x)
        if not keep.any():
            continue
        start, end = start[keep], end[keep]
        for name, f in (("pretrained", enc), ("random", enc_random)):
            rows[name].append(window_features(f(x), start, end, fs, basis[name]))
        rows["signal"].append(np.array([signal_readouts(x[s:e], fs) for s, e in zip(start, end)]).reshape(-1, 3))
        rows["meta"].append({"dataset": np.full(keep.sum(), item.dataset, object),
                             "recording": np.full(keep.sum(), item.rec.name, object),
                             "item": np.full(keep.sum(), k), "split": np.full(keep.sum(), item.split, object),
                             "corruption": np.full(keep.sum(), getattr(item, "corruption", ""), object),
                             "hr": item.hr[keep], "activity": item.activity[keep], "good": item.good[keep]})
    levels = len(cfg["channels"])
    out = {}
    for enc_name in ("pretrained", "random"):
        out[enc_name] = {key: [np.concatenate([r[key][l] for r in rows[enc_name]]) for l in range(levels)]
                         for key in ("spectrum", "mean", "std", "purity")}
        out[enc_name]["basis"] = basis[enc_name]
    out["signal"] = np.concatenate(rows["signal"])
    out.update({key: np.concatenate([m[key] for m in rows["meta"]]) for key in rows["meta"][0]})
    return out


def clean_flags(items: list[C.Item], model_fs: float, normalizer: dict) -> list[np.ndarray]:
    """Per item, windows whose PPG's spectral peak agrees with the reference HR (or BUT 'good')."""
    out = []
    for item in items:
        x = prepare(item.rec, item.rec.channel_names[0], model_fs, normalizer)
        sp = np.array([signal_readouts(x[int(round(s * model_fs)) : int(round(s * model_fs)) + int(C.WINDOW_S * model_fs)],
                                       model_fs)[0] if (s + C.WINDOW_S) * model_fs <= len(x) else np.nan
                       for s in item.start_s])
        ok = np.abs(sp - item.hr) <= AGREE_BPM / 2
        ok |= item.good == 1
        out.append(ok & (item.split == "fit"))
    return out


def cache_path(path: Path, cache_dir: Path, seed: int = 0, datasets=C.DATASETS) -> Path:
    """Where `features` keeps one model file's features: by its configuration and weights (not
    the heads or card it carries, which fitting rewrites), data sets, seed and code version."""
    from himae_stream import modelfile

    mf = modelfile.read(path)
    h = hashlib.sha1(json.dumps(mf.config, sort_keys=True).encode())
    for name in sorted(mf.tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(mf.tensors[name]).tobytes())
    digest = h.hexdigest()[:12]
    which = hashlib.sha1(",".join(datasets).encode()).hexdigest()[:6]
    return Path(cache_dir) / f"heads-{Path(path).stem}-{digest}-{which}-s{seed}-v{CACHE_VERSION}.npz"


def features(model, path: Path, data_dir: Path, cache_dir: Path | None, seed: int = 0, items=None,
             datasets=C.DATASETS) -> dict:
    """`extract` over the corpus and its corruptions, cached by model file and corpus."""
    key = None
    if cache_dir is not None:
        key = cache_path(path, cache_dir, seed, datasets)
        if key.exists():
            return _load(key)
    items = C.corpus(data_dir, datasets) if items is None else items
    cfg = model.config
    items = items + synthetic(items, clean_flags(items, float(cfg["fs"]), cfg["normalizer"]), seed)
    out = extract(model, items, seed)
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        _save(key, out)
    return out


def _save(path: Path, f: dict) -> None:
    flat = {}
    for enc in ("pretrained", "random"):
        for key, per in f[enc].items():
            for l, a in enumerate(per):
                flat[f"{enc}.{key}.{l}"] = a  # basis included
    for key, value in f.items():
        if key not in ("pretrained", "random"):
            flat[key] = value.astype(str) if value.dtype == object else value
    np.savez(path, **flat)


def _load(path: Path) -> dict:
    z = np.load(path)
    out: dict = {"pretrained": {}, "random": {}}
    for name in z.files:
        parts = name.split(".")
        if len(parts) == 3:
            out[parts[0]].setdefault(parts[1], {})[int(parts[2])] = z[name]
        else:
            out[name] = z[name]
    for enc in ("pretrained", "random"):
        out[enc] = {k: [v[l] for l in sorted(v)] for k, v in out[enc].items()}
    for name in ("dataset", "recording", "split", "corruption"):
        out[name] = out[name].astype(object)
    act = out["activity"].astype(object)
    act[act == "None"] = None
    out["activity"] = act
    return out


# ------------------------------------------------------------------ labels


def quality_labels(hr_ppg, hr_ref, good, corrupted) -> np.ndarray:
    """1 (clean) / 0 / NaN per window: a corruption is 0; BUT's expert label where given; else whether
    the PPG's spectral-peak heart rate is within 10 BPM of the independent reference."""
    y = np.where(np.abs(np.asarray(hr_ppg) - hr_ref) <= AGREE_BPM, 1.0, 0.0)
    y[~np.isfinite(hr_ref) | ~np.isfinite(hr_ppg)] = np.nan
    y = np.where(np.isfinite(good), good, y)
    return np.where(np.asarray(corrupted, bool), 0.0, y)


def lodo_folds(datasets: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """One fold per data set: (held-out name, boolean mask of its windows). Never on both sides."""
    return [(name, datasets == name) for name in sorted(set(datasets.tolist()))]


# ------------------------------------------------------------------ metrics


def mae(pred, y) -> float:
    ok = np.isfinite(y)
    err = np.abs(np.where(np.isfinite(pred), pred, 0.0) - y)[ok]  # no estimate counts as wrong by the full rate
    return float(err.mean()) if err.size else float("nan")


def auc(score, y) -> float:
    """Area under the ROC curve (clean = positive), ties counted half."""
    from scipy.stats import rankdata

    ok = np.isfinite(y) & np.isfinite(score)
    s, y = score[ok], y[ok]
    pos, neg = (y == 1).sum(), (y == 0).sum()
    if not pos or not neg:
        return float("nan")
    r = rankdata(s)
    return float((r[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def balanced_accuracy(pred, y, classes) -> float:
    recalls = [np.mean(pred[y == c] == c) for c in classes if np.any(y == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


# ---------------------------------------------------------------- heart rate


def usable_levels(n_levels: int, fs: float) -> list[int]:
    """Levels whose Nyquist rate (fs / 2^(l+2)) reaches most of the band (0.85 of its top): a deeper
    level cannot see a running heart rate and would win only on data sets at rest."""
    return [l for l in range(n_levels) if fs / 2 ** (l + 2) >= 0.85 * BAND[1]]


def level_sets(n_levels: int, fs: float) -> list[list[int]]:
    """Contiguous runs of usable levels."""
    usable = usable_levels(n_levels, fs)
    return [usable[a : b + 1] for a in range(len(usable)) for b in range(a, len(usable))]


def spectral_hr(spectra: list, levels: list[int], fs: float, span: int) -> np.ndarray:
    """Rates (BPM) of a spectral head with equal weights over `levels`, from cached band spectra."""
    df = P.level_power(np.zeros((1, 2)), 0, fs, span)[1]
    total = sum(spectra[l].astype(np.float64) for l in levels)
    return 60.0 * P.peak_rates(total, df, BAND)


def dataset_mae(pred, y, datasets, mask) -> float:
    """Mean over data sets of each one's MAE (a data set with many windows counts once)."""
    names = sorted(set(datasets[mask].tolist()))
    return float(np.mean([mae(pred[mask & (datasets == n)], y[mask & (datasets == n)]) for n in names]))


def fit_heart_rate(f: dict, fs: float, span: int, enc: str = "pretrained") -> dict:
    """The spectral heart-rate head, its levels chosen leave-one-dataset-out; out-of-fold rates."""
    y, ds = f["hr"], f["dataset"]
    has = np.isfinite(y)
    fit_rows = has & (f["split"] == "fit")
    n_levels = len(f[enc]["spectrum"])
    candidates = level_sets(n_levels, fs)
    rates = {tuple(c): spectral_hr(f[enc]["spectrum"], c, fs, span) for c in candidates}

    def choose(mask):
        """The best level set; within 0.1 BPM of it, the one with fewest levels (cheapest to run)."""
        score = {tuple(c): dataset_mae(rates[tuple(c)], y, ds, mask) for c in candidates}
        best = min(score.values())
        return list(min((c for c in score if score[c] <= best + TIE_BPM), key=lambda c: (len(c), score[c])))

    oof = np.full(len(y), np.nan)
    chosen = {}
    for name, held in lodo_folds(ds[has]):
        held_rows = has & (ds == name)
        c = choose(fit_rows & ~held_rows)
        chosen[name] = c
        oof[held_rows] = rates[tuple(c)][held_rows]
    levels = choose(fit_rows)
    head = {"name": "heart_rate", "kind": "spectral", "levels": levels, "weights": [1.0] * len(levels),
            "basis": [f[enc]["basis"][l].tolist() for l in levels], "band_hz": list(BAND), "pad": P.PAD,
            "unit": "BPM", "window_s": C.WINDOW_S}
    return {"head": head, "oof": oof, "fold_levels": chosen,
            "per_level": [spectral_hr(f[enc]["spectrum"], [l], fs, span) for l in range(n_levels)]}


# ------------------------------------------------------------ linear heads


def design(f: dict, enc: str, levels: list[int], purity_levels: list[int] = (), pool=POOL,
           combined: bool = False, fs: float = 100.0, span: int = 800) -> np.ndarray:
    """Features in the order `himae_stream.probes.features` builds them."""
    parts = [f[enc][p][l] for l in levels for p in pool]
    if combined and purity_levels:
        df = P.level_power(np.zeros((1, 2)), 0, fs, span)[1]
        total = sum(f[enc]["spectrum"][l].astype(np.float64) for l in purity_levels)
        parts.append(np.array([P.band_purity(row, df) for row in total])[:, None])
    else:
        parts += [f[enc]["purity"][l][:, None] for l in purity_levels]
    return np.hstack(parts).astype(np.float64)


def ship_rule(overall_head, overall_base, per_dataset: list[tuple[float, float]], higher: bool) -> bool:
    """A head ships if it beats its baseline over all held-out windows and is no worse on at least
    half of the held-out data sets."""
    better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
    no_worse = [not better(b, a) for a, b in per_dataset if np.isfinite(a) and np.isfinite(b)]
    return bool(better(overall_head, overall_base) and no_worse and np.mean(no_worse) >= 0.5)


def below_chance(table: dict) -> list[str]:
    """Held-out data sets on which a head that tells classes apart does no better than a coin (its
    score at most CHANCE: the activity head's balanced accuracy, for a data set of one class its
    recall; the quality head's AUC). Such a head would show there a class, or a probability, the
    project knows to be no better than a guess, so it stays out of default records however it
    scores over all windows."""
    return [name for name, t in table.items() if np.isfinite(t["head"]) and t["head"] <= CHANCE]


def fit_binary(X: np.ndarray, y: np.ndarray, lam: float = LAMBDA) -> dict:
    """Logistic regression for P(clean), unweighted so its probabilities stay calibrated."""
    h = fit_logistic(X, np.where(y == 1, "clean", "poor").astype(object), ["poor", "clean"], lam)
    W, b = np.asarray(h["weights"]), np.asarray(h["bias"])
    return {"kind": "probability", "mean": h["mean"], "std": h["std"], "weights": (W[1] - W[0])[None],
            "bias": np.array([b[1] - b[0]])}


def _balanced_logistic(X, y, classes, lam=LAMBDA) -> dict:
    """Class-balanced multinomial logistic regression (`training.probes.fit_logistic`)."""
    return fit_logistic(X, y, list(classes), lam)


def lodo_linear(X: np.ndarray, y: np.ndarray, ds: np.ndarray, fit, rows: np.ndarray, test_rows=None):
    """Out-of-fold predictions of a linear model fitted leave-one-dataset-out on `rows`."""
    oof = np.full(len(y), np.nan, dtype=object)
    for name, held in lodo_folds(ds[rows]):
        held_rows = (ds == name) & (rows if test_rows is None else test_rows)
        train = rows & (ds != name)
        if not held_rows.any() or len(set(y[train].tolist())) < 2:
            continue
        head = fit(X[train], y[train])
        oof[held_rows] = P.predict(head, X[held_rows])
    return oof


def choose_quality(candidates: dict, q: np.ndarray, ds: np.ndarray, rows: np.ndarray):
    """The candidate design whose leave-one-dataset-out AUC over `rows` is highest (the first on a tie)."""
    def score(c):
        return auc(lodo_linear(candidates[c], q, ds, fit_binary, rows).astype(float)[rows], q[rows])
    return max(candidates, key=score)


def lodo_chosen(candidates: dict, q: np.ndarray, ds: np.ndarray, rows: np.ndarray, test_rows: np.ndarray):
    """Out-of-fold P(clean) on `test_rows` of a quality head whose design is chosen inside each fold
    (`choose_quality` on the other data sets); and each held-out data set's choice."""
    oof = np.full(len(q), np.nan)
    choices = {}
    for name, _ in lodo_folds(ds[rows]):
        train = rows & (ds != name)
        held = (ds == name) & test_rows
        if not held.any() or len(set(q[train].tolist())) < 2:
            continue
        chosen = choose_quality(candidates, q, ds, train)
        choices[name], X = list(chosen), candidates[chosen]
        oof[held] = P.predict(fit_binary(X[train], q[train]), X[held]).astype(float)
    return oof, choices


def evaluate(f: dict, model_cfg: dict) -> dict:
    """Every head and baseline, leave-one-dataset-out; the heads to ship."""
    from threadpoolctl import threadpool_limits

    fs = float(model_cfg["fs"])
    span = int(round(C.WINDOW_S * fs))
    n_levels = len(model_cfg["channels"])
    ds = f["dataset"]
    sp_hr, pi_hr, sig_purity = f["signal"].T
    corrupted = f["corruption"] != ""
    result: dict = {"datasets": sorted(set(ds.tolist()))}
    with threadpool_limits(1):
        # heart rate
        y = f["hr"]
        hr = fit_heart_rate(f, fs, span)
        hr_random = fit_heart_rate(f, fs, span, "random")
        has = np.isfinite(y)
        table = {}
        for key, m, at_rest in hr_rows(f, has):
            name = ds[m][0]
            table[key] = {"windows": int(m.sum()), "recordings": len(set(f["recording"][m].tolist())),
                          "head": mae(hr["oof"][m], y[m]), "spectral_peak": mae(sp_hr[m], y[m]),
                          "peak_interval": mae(pi_hr[m], y[m]), "random_head": mae(hr_random["oof"][m], y[m]),
                          "levels": hr["fold_levels"][name], "rest": at_rest,
                          "per_level": [mae(p[m], y[m]) for p in hr["per_level"]],
                          "per_level_random": [mae(p[m], y[m]) for p in hr_random["per_level"]]}
            rec_err = per_recording(f["recording"], m, lambda g: mae(hr["oof"][g], y[g]))
            rec_sp = per_recording(f["recording"], m, lambda g: mae(sp_hr[g], y[g]))
            rec_med = median_errors(hr["oof"], y, f["recording"], m)
            rec_med_sp = median_errors(sp_hr, y, f["recording"], m)
            table[key].update(recording_mae_mean=float(np.mean(rec_err)), recording_mae_max=float(np.max(rec_err)),
                              recording_within_3=float(np.mean(np.array(rec_err) <= 3.0)),
                              recording_mae_mean_spectral_peak=float(np.mean(rec_sp)),
                              recording_median_error=float(np.mean(rec_med)),
                              recording_median_error_spectral_peak=float(np.mean(rec_med_sp)),
                              recording_median_within_3=float(np.mean(np.array(rec_med) <= 3.0)),
                              signal_over_reference=signal_over_reference(sp_hr, y, f["recording"], m))
        overall = {"head": dataset_mae(hr["oof"], y, ds, has), "spectral_peak": dataset_mae(sp_hr, y, ds, has),
                   "peak_interval": dataset_mae(pi_hr, y, ds, has),
                   "random_head": dataset_mae(hr_random["oof"], y, ds, has),
                   "per_level": [dataset_mae(p, y, ds, has) for p in hr["per_level"]],
                   "per_level_random": [dataset_mae(p, y, ds, has) for p in hr_random["per_level"]]}
        troika_test = table.get("TROIKA test", {})
        wins = ship_rule(overall["head"], overall["spectral_peak"],
                         [(t["head"], t["spectral_peak"]) for k, t in table.items()
                          if not k.endswith(("(good quality)", "(at rest)"))], False) and (
            not troika_test or troika_test["head"] <= troika_test["spectral_peak"])
        result["heart_rate"] = {"metric": "mae", "unit": "BPM", "higher_is_better": False, "datasets": table,
                                "overall": overall, "ship": bool(wins), "head": hr["head"],
                                "baseline": "spectral peak of the normalised PPG window"}

        # quality: a logistic fit on the purity of the spectrum the heart-rate head reads (levels that
        # see the whole band, summed as a spectral head sums them), with or without the std of the
        # finest level's channels: the candidate is chosen inside each fold
        q = quality_labels(sp_hr, y, f["good"], corrupted)
        rows = np.isfinite(q)
        usable = usable_levels(n_levels, fs)
        candidates = {c: design(f, "pretrained", list(c), usable, ["std"], combined=True, fs=fs, span=span)
                      for c in QUALITY_STD_LEVELS}
        p_clean, choices = lodo_chosen(candidates, q, ds, rows, np.ones(len(q), bool))
        oof = np.where(rows, p_clean, np.nan)
        qtable = {}
        for name in sorted(set(ds[rows].tolist())):
            m = rows & (ds == name)
            qtable[name] = {"windows": int(m.sum()), "clean_share": float(q[m].mean()), "head": auc(oof[m], q[m]),
                            "purity": auc(sig_purity[m], q[m]),
                            "brier": float(np.nanmean((oof[m] - q[m]) ** 2))}
        per_level = [auc(lodo_linear(design(f, enc, [l], [l] if l in usable else [], ["std"]), q, ds, fit_binary,
                                     rows).astype(float), q)
                     for enc in ("pretrained", "random") for l in range(n_levels)]
        qoverall = {"head": auc(oof, q), "purity": auc(sig_purity, q), "std_levels": choices,
                    "per_level": per_level[:n_levels], "per_level_random": per_level[n_levels:],
                    "brier": float(np.nanmean((oof[rows] - q[rows]) ** 2))}
        # must hold: contact loss and heavy noise at least 0.2 below the clean windows
        drops = {}
        for kind in CORRUPTIONS:
            m = f["corruption"] == kind
            drops[kind] = float(np.nanmean(oof[m])) if m.any() else None
        clean_oof = oof[rows & (q == 1) & ~corrupted]
        drops["clean"] = float(np.nanmean(clean_oof)) if clean_oof.size else None
        usable_basis = [f["pretrained"]["basis"][l].tolist() for l in usable]
        chosen = choose_quality(candidates, q, ds, rows)
        qhead = {"name": "quality", **fit_binary(candidates[chosen][rows], q[rows]), "levels": list(chosen),
                 "pool": ["std"], "purity_levels": usable, "purity_mode": "combined", "basis": usable_basis,
                 "unit": "probability (1 = clean)", "window_s": C.WINDOW_S}
        holds = all(drops[k] is not None and drops["clean"] is not None and drops["clean"] - drops[k] >= 0.2
                    for k in ("flat", "noise"))
        ships = ship_rule(qoverall["head"], qoverall["purity"], [(t["head"], t["purity"]) for t in qtable.values()],
                          True)
        # the heart rate as records show it: withheld where the quality head (out of fold) is below the bound
        result["heart_rate"]["head"]["withheld_below"] = {"head": "quality", "probability": HR_SHOWN_FROM}
        shown = result["heart_rate"]["shown"] = shown_rates(f, hr["oof"], sp_hr, p_clean >= HR_SHOWN_FROM)
        # must hold: ≤ 3 BPM per resting recording, read on all windows and on the rates records show
        rest = [k for k, t in table.items() if t["rest"]]
        result["heart_rate_must_hold"] = {
            "rest_recording_error_le_3": {k: table[k]["recording_median_error"] <= 3.0 for k in rest},
            "rest_recording_shown_error_le_3": {k: None if (e := shown["datasets"][k]["recording_median_error"]) is None
                                                else e <= 3.0 for k in rest},
            "troika_test_no_worse_than_spectral_peak": (troika_test["head"] <= troika_test["spectral_peak"]
                                                        if troika_test else None)}
        coin = below_chance(qtable)
        result["quality"] = {"metric": "auc", "higher_is_better": True, "datasets": qtable, "overall": qoverall,
                             "corruptions": drops, "must_hold": bool(holds), "ship": bool(ships and holds and not coin),
                             "below_chance": coin,
                             "head": _jsonable(qhead), "baseline": "spectral purity of the normalised PPG window"}

        # activity: std over positions of every level and the purity of each usable level; the
        # L2 strength chosen inside each fold, leave-one-dataset-out on the other data sets
        a = f["activity"]
        rows = np.array([v is not None for v in a]) & ~corrupted
        classes = C.ACTIVITY_CLASSES
        X = design(f, "pretrained", list(range(n_levels)), usable, ["std"])

        def fit_act(Xt, yt, lam=ACTIVITY_LAMBDAS[-1]):
            return _balanced_logistic(Xt, yt, classes, lam)

        def fit_act_nested(Xt, yt, dst):
            def inner(lam):
                o = lodo_linear(Xt, yt, dst, lambda X2, y2: fit_act(X2, y2, lam), np.ones(len(yt), bool))
                ok = np.array([v is not None for v in o])
                return balanced_accuracy(o[ok], yt[ok], classes) if ok.any() else 0.0
            lam = max(ACTIVITY_LAMBDAS, key=inner)
            return fit_act(Xt, yt, lam), lam

        oof = np.full(len(a), None, dtype=object)
        lams = {}
        for name, _ in lodo_folds(ds[rows]):
            held = rows & (ds == name)
            train = rows & (ds != name)
            if len(set(a[train].tolist())) < 2:
                continue
            head, lams[name] = fit_act_nested(X[train], a[train], ds[train])
            oof[held] = P.predict(head, X[held])
        Xb = np.nan_to_num(f["signal"], nan=0.0)
        oof_b = lodo_linear(Xb, a, ds, lambda Xt, yt: _balanced_logistic(Xt, yt, classes), rows)
        atable = {}
        for name in sorted(set(ds[rows].tolist())):
            m = rows & (ds == name)
            atable[name] = {"windows": int(m.sum()), "classes": sorted(set(a[m].tolist())),
                            "head": balanced_accuracy(oof[m], a[m], classes),
                            "baseline": balanced_accuracy(oof_b[m], a[m], classes), "lambda": lams.get(name)}
        per_level = [balanced_accuracy(lodo_linear(design(f, enc, [l], [l] if l in usable else [], ["std"]), a, ds,
                                                   fit_act, rows)[rows], a[rows], classes)
                     for enc in ("pretrained", "random") for l in range(n_levels)]
        aoverall = {"head": balanced_accuracy(oof[rows], a[rows], classes),
                    "baseline": balanced_accuracy(oof_b[rows], a[rows], classes),
                    "per_level": per_level[:n_levels], "per_level_random": per_level[n_levels:]}
        final, lam = fit_act_nested(X[rows], a[rows], ds[rows])
        ahead = {"name": "activity", **final, "levels": list(range(n_levels)), "pool": ["std"],
                 "purity_levels": usable, "basis": usable_basis, "window_s": C.WINDOW_S}
        ships = ship_rule(aoverall["head"], aoverall["baseline"],
                          [(t["head"], t["baseline"]) for t in atable.values()], True)
        coin = below_chance(atable)
        result["activity"] = {"metric": "balanced_accuracy", "higher_is_better": True, "datasets": atable,
                              "overall": aoverall, "ship": ships and not coin, "below_chance": coin,
                              "head": _jsonable(ahead),
                              "classes": list(classes),
                              "baseline": "logistic on the classical read-outs (spectral-peak HR, peak-interval HR, "
                                          "spectral purity)"}
    return result


def hr_rows(f: dict, has: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    """The rows of a heart-rate table under `has`: (name, windows, at rest) per data set's fitted
    recordings, its test recordings, its good ones where it grades them, and its resting ones where
    it has others (BUT's walking clips are not a resting recording). `at rest` marks the rows the
    must-hold bound (≤ 3 BPM per resting recording) is read from."""
    ds, split, rest = f["dataset"], f["split"], f["activity"] == "rest"
    rows = []
    for name in sorted(set(ds[has].tolist())):
        fit = has & (ds == name) & (split == "fit")
        rows.append((name, fit, name in REST_DATASETS and bool(rest[fit].all())))
        rows.append((f"{name} test", has & (ds == name) & (split == "test"), False))
        if np.isfinite(f["good"][fit]).any():
            rows.append((f"{name} (good quality)", fit & (f["good"] == 1), False))
        if name in REST_DATASETS and not rest[fit].all():
            rows.append((f"{name} (at rest)", fit & rest, True))
    return [(key, m, at_rest) for key, m, at_rest in rows if m.any()]


def per_recording(recording: np.ndarray, mask: np.ndarray, stat) -> list:
    """stat(windows) for each recording's windows under `mask`, in name order."""
    return [stat(mask & (recording == r)) for r in sorted(set(recording[mask].tolist()))]


def signal_over_reference(peak: np.ndarray, y: np.ndarray, recording: np.ndarray, mask: np.ndarray) -> float:
    """Median over recordings of (median of the signal's own spectral-peak rates) / (reference): far
    from 1 where the reference and the PPG disagree whatever reads the PPG (AIST's one reading a
    session sits about 5 % below its PPG's rate)."""
    return float(np.median(per_recording(recording, mask, lambda g: np.nanmedian(peak[g]) / np.median(y[g]))))


def median_errors(rates: np.ndarray, y: np.ndarray, recording: np.ndarray, mask: np.ndarray) -> list[float]:
    """Per recording with windows under `mask`, in name order: |median of its windows' rates − its
    reference|. AIST's reference is one reading per session, so a recording's own error is what its
    windows agree on, not each window's (those include the heart's own changes)."""
    return per_recording(recording, mask, lambda g: abs(float(np.nanmedian(rates[g])) - float(np.median(y[g]))))


def shown_rates(f: dict, rates: np.ndarray, peak: np.ndarray, shown: np.ndarray) -> dict:
    """Heart rate where it is shown (`shown`): per held-out data set with HR labels, the share of
    windows that keep a rate, the MAE over those (head and spectral peak) and per recording the
    |median − reference| over its shown windows; and per corruption the share that keeps a rate."""
    y, rec = f["hr"], f["recording"]
    has = np.isfinite(y) & (f["corruption"] == "")
    out: dict = {"probability": HR_SHOWN_FROM, "datasets": {}, "corruptions": {}}
    for key, m, _ in hr_rows(f, has):
        g = m & shown
        err = median_errors(rates, y, rec, g)
        out["datasets"][key] = {
            "windows": int(m.sum()), "shown": float(g.sum() / m.sum()),
            "head": mae(rates[g], y[g]) if g.any() else None, "spectral_peak": mae(peak[g], y[g]) if g.any() else None,
            "recordings": len(set(rec[m].tolist())), "recordings_shown": len(err),
            "recording_median_error": float(np.mean(err)) if err else None,
            "recording_median_within_3": float(np.mean(np.array(err) <= 3.0)) if err else None}
    for kind in CORRUPTIONS:
        m = f["corruption"] == kind
        out["corruptions"][kind] = float(shown[m].mean()) if m.any() else None
    return out


def _jsonable(head: dict) -> dict:
    out = {}
    for k, v in head.items():
        out[k] = np.asarray(v, dtype=np.float64).tolist() if isinstance(v, np.ndarray) else v
    return out


def shipped_heads(result: dict) -> list[dict]:
    """The heads for the model file, each flagged `default` by the rule and carrying its LODO numbers."""
    out = []
    for task in ("heart_rate", "quality", "activity"):
        r = result[task]
        head = dict(r["head"])
        head["default"] = bool(r["ship"])
        head["metrics"] = {"metric": r["metric"], "lodo": r["overall"]["head"],
                           "baseline": r["overall"].get("spectral_peak", r["overall"].get("purity",
                                                                                          r["overall"].get("baseline"))),
                           "baseline_name": r["baseline"]}
        out.append(head)
    return out


def why(task: str, r: dict) -> str:
    """One sentence for the model card: ships or not, and the numbers that decided it."""
    o = r["overall"]
    if task == "heart_rate":
        t = r["datasets"].get("TROIKA test")
        text = (f"heart_rate (spectral, levels {r['head']['levels']}): LODO MAE {o['head']:.2f} BPM (mean over data "
                f"sets) vs spectral peak {o['spectral_peak']:.2f}")
        if t:
            text += f"; TROIKA test {t['head']:.2f} vs {t['spectral_peak']:.2f}"
    elif task == "quality":
        text = (f"quality: LODO AUC {o['head']:.3f} vs spectral purity {o['purity']:.3f}; flat line "
                f"{r['corruptions']['flat']:.2f}, heavy noise {r['corruptions']['noise']:.2f}, clean "
                f"{r['corruptions']['clean']:.2f}")
    else:
        text = f"activity: LODO balanced accuracy {o['head']:.3f} vs classical {o['baseline']:.3f}"
    if r["ship"]:
        return text + " — in default records"
    if r.get("below_chance"):
        wrong = ", ".join(f"{name} {r['datasets'][name]['head']:.2f}" for name in r["below_chance"])
        return text + f" — NOT in default records (no better than a coin on a data set it never saw: {wrong})"
    return text + " — NOT in default records (loses to the baseline)"


def summary_json(result: dict) -> str:
    return json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "head"} if isinstance(v, dict) else v
                       for k, v in result.items()}, indent=1)


def card(old: dict | None, result: dict, model_name: str) -> dict:
    """The model card with the heads' leave-one-dataset-out numbers and the ship decision of each."""
    old = dict(old or {})
    first = [p for p in (old.get("summary") or "").split("; ")
             if p and not p.startswith(("HR MAE", "activity", "heads", "quality"))]
    first = first or [f"{model_name}"]
    hr, q, a = result["heart_rate"], result["quality"], result["activity"]
    t = hr["datasets"].get("TROIKA test")
    hr_text = (f"HR MAE {hr['overall']['head']:.1f} BPM on held-out data sets (spectral peak "
               f"{hr['overall']['spectral_peak']:.1f})" + (f", TROIKA test {t['head']:.1f} (spectral peak "
                                                             f"{t['spectral_peak']:.1f})" if t else ""))
    shipped = [k for k in ("heart_rate", "quality", "activity") if result[k]["ship"]]
    parts = [*first, hr_text, f"quality AUC {q['overall']['head']:.2f} (purity {q['overall']['purity']:.2f})",
             f"activity bal. acc. {a['overall']['head']:.2f} (classical {a['overall']['baseline']:.2f})",
             f"heads in default records: {', '.join(shipped) or 'none'} (leave-one-dataset-out over "
             f"{len(result['datasets'])} data sets)"]
    metrics = {k: v for k, v in (old.get("metrics") or {}).items() if k == "masked_reconstruction_mse"}
    for task in ("heart_rate", "quality", "activity"):
        r = result[task]
        base = r["overall"].get("spectral_peak", r["overall"].get("purity", r["overall"].get("baseline")))
        metrics[task] = {"metric": r["metric"], "lodo": r["overall"]["head"], "baseline": base,
                         "baseline_name": r["baseline"], "default": bool(r["ship"])}
        if task == "heart_rate" and t:
            metrics[task]["troika_test"] = t["head"]
            metrics[task]["troika_test_baseline"] = t["spectral_peak"]
    old.update(summary="; ".join(parts), metrics=metrics,
               heads={task: why(task, result[task]) for task in ("heart_rate", "quality", "activity")},
               evaluation="leave-one-dataset-out; docs/resolution-report.md")
    return old
