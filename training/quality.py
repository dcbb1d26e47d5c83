"""Masked-reconstruction error: the signal-quality target, and HiMAE against simple fills.

The pretraining task zeroes 80 % of 5-sample patches and asks the decoder for
them back. Where the signal is clean and periodic the error is low; motion
artefacts and noise make it high, which is what a signal-quality score needs.
"""

from __future__ import annotations

import numpy as np
import torch

from training.model import HiMAE


def patch_mask(n: int, patch: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of `n` samples (True = hidden): exactly round(ratio·patches) whole patches."""
    n_patches = -(-n // patch)
    hidden = rng.permutation(n_patches)[: int(round(ratio * n_patches))]
    by_patch = np.zeros(n_patches, dtype=bool)
    by_patch[hidden] = True
    return np.repeat(by_patch, patch)[:n]


def reconstruct(model: HiMAE, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The model's reconstruction of `x` (…, L) with the masked samples zeroed, one channel."""
    inp = torch.from_numpy(np.where(mask, 0.0, x).astype(np.float32)).reshape(-1, 1, x.shape[-1])
    with torch.no_grad():
        return model(inp).reshape(x.shape).numpy().astype(np.float64)


def linear_fill(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked samples linearly interpolated from the visible ones (held constant at the ends)."""
    keep = ~mask
    if not keep.any():
        return np.zeros_like(x, dtype=np.float64)
    idx = np.arange(len(x))
    return np.interp(idx, idx[keep], x[keep])


def window_errors(x, recon, mask, start_s, end_s, fs: float) -> np.ndarray:
    """Mean squared error over the masked samples of each window [start_s, end_s)."""
    sq = np.where(mask, (np.asarray(recon, dtype=np.float64) - x) ** 2, 0.0)
    out = []
    for s, e in zip(start_s, end_s):
        a, b = int(round(s * fs)), int(round(e * fs))
        out.append(sq[a:b].sum() / max(mask[a:b].sum(), 1))
    return np.array(out)


def quality_target(model: HiMAE, x: np.ndarray, start_s, end_s, seed: int = 0) -> np.ndarray:
    """log10 masked-reconstruction MSE per window, masking the whole recording at once."""
    cfg = model.config
    mask = patch_mask(len(x), cfg["patch_size"], cfg["mask_ratio"], np.random.default_rng(seed))
    err = window_errors(x, reconstruct(model, x, mask), mask, start_s, end_s, cfg["fs"])
    return np.log10(err + 1e-6)


def fill_comparison(model: HiMAE, signals: list[np.ndarray], seed: int = 0) -> dict[str, float]:
    """MSE on masked samples of the model's windows (non-overlapping): HiMAE, linear, zero fill."""
    cfg = model.config
    L = cfg["window"]
    windows = np.array([s[i : i + L] for s in signals for i in range(0, len(s) - L + 1, L)], dtype=np.float64)
    rng = np.random.default_rng(seed)
    masks = np.array([patch_mask(L, cfg["patch_size"], cfg["mask_ratio"], rng) for _ in windows])
    recon = reconstruct(model, windows, masks)
    linear = np.array([linear_fill(w, m) for w, m in zip(windows, masks)])
    n = masks.sum()
    return {
        "windows": int(len(windows)),
        "himae": float(((recon - windows) ** 2)[masks].sum() / n),
        "linear": float(((linear - windows) ** 2)[masks].sum() / n),
        "zero": float((windows**2)[masks].sum() / n),
    }
