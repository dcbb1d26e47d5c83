"""Probe heads: linear read-outs of one encoder level's window embedding.

A model file may carry a `probes` list in its metadata. Each head standardises
the mean embedding of one level over a window and applies a linear map:
ridge regression (`kind: "ridge"`, one output) or multinomial logistic
regression (`kind: "logistic"`, one output per class, softmax). Training fits
them (`himae probe`); this module is the one place that applies them, so the
runtime and the probe report give the same predictions for the same windows.
"""

from __future__ import annotations

import math

import numpy as np

from himae_stream._core import affine

KINDS = ("ridge", "logistic")


def validate(head: dict, channels: list[int]) -> dict:
    """Check a head against the model's per-level channels; raise ValueError naming the problem."""
    name = head.get("name") if isinstance(head, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError("probe head without a name")
    if head.get("kind") not in KINDS:
        raise ValueError(f"probe {name!r}: kind must be one of {KINDS}, got {head.get('kind')!r}")
    level = head.get("level")
    if not isinstance(level, int) or not 0 <= level < len(channels):
        raise ValueError(f"probe {name!r}: level {level!r} is not a level of this model (0 … {len(channels) - 1})")
    dim = channels[level]
    outputs = len(head.get("classes") or []) if head["kind"] == "logistic" else 1
    if head["kind"] == "logistic" and outputs < 2:
        raise ValueError(f"probe {name!r}: a logistic head needs at least two classes")
    shapes = {"mean": (dim,), "std": (dim,), "weights": (outputs, dim), "bias": (outputs,)}
    for key, shape in shapes.items():
        value = np.asarray(head.get(key, []), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"probe {name!r}: {key} has shape {list(value.shape)}, level {level} needs {list(shape)}")
        if not np.isfinite(value).all():
            raise ValueError(f"probe {name!r}: {key} contains NaN or Inf")
    if (np.asarray(head["std"]) <= 0).any():
        raise ValueError(f"probe {name!r}: std must be positive")
    return head


def fold(head: dict) -> tuple[np.ndarray, np.ndarray]:
    """The head as one affine map of the raw embedding: weights `(dim, outputs)`, bias `(outputs,)`.

    The standardisation is folded into the linear map, so applying a head is
    one matrix product.
    """
    w = np.asarray(head["weights"], dtype=np.float64) / np.asarray(head["std"], dtype=np.float64)
    b = np.asarray(head["bias"], dtype=np.float64) - w @ np.asarray(head["mean"], dtype=np.float64)
    return np.ascontiguousarray(w.T), b


def scores(head: dict, embeddings) -> np.ndarray:
    """Raw linear outputs `(n, outputs)` for embeddings `(n, dim)` or `(dim,)` of the head's level."""
    w, b = fold(head)
    return np.atleast_2d(np.asarray(embeddings, dtype=np.float64)) @ w + b


def _softmax(s: list[float]) -> list[float]:
    """Softmax of one window's class scores (a handful: plain floats beat numpy calls)."""
    top = max(s)
    e = [math.exp(v - top) for v in s]
    total = sum(e)
    return [v / total for v in e]


def predict(head: dict, embeddings) -> np.ndarray:
    """Predictions for `(n, dim)` embeddings: values (ridge) or class names (logistic)."""
    s = scores(head, embeddings)
    if head["kind"] == "ridge":
        return s[:, 0]
    return np.asarray(head["classes"], dtype=object)[np.argmax(s, axis=1)]


def probabilities(head: dict, embeddings) -> np.ndarray:
    """Class probabilities `(n, classes)` of a logistic head."""
    return np.array([_softmax(row) for row in scores(head, embeddings).tolist()])


class Heads:
    """A model's probe heads, prepared once for applying them window after window.

    Per level, the folded maps of every head reading it sit stacked in one
    matrix, so a window costs one small product per level used.
    """

    def __init__(self, heads: list[dict]):
        self.heads = list(heads)
        by_level: dict[int, list[dict]] = {}
        for head in self.heads:
            by_level.setdefault(head["level"], []).append(head)
        self._levels = []  # (level, weights (outputs, dim), bias, [(head, first row, end row)])
        for level, group in by_level.items():
            maps = [fold(head) for head in group]
            ends = np.cumsum([b.size for _, b in maps]).tolist()
            spans = list(zip(group, [0, *ends[:-1]], ends))
            weights = np.ascontiguousarray(np.hstack([w for w, _ in maps]).T)
            self._levels.append((level, weights, np.concatenate([b for _, b in maps]), spans))

    def __iter__(self):
        return iter(self.heads)

    def apply(self, windows) -> list[dict]:
        """Every head's prediction for each window, given each one's per-level mean embeddings.

        A window gives `{name: value}` (float) for ridge heads and `{name: class}`
        plus `{name + "_p": {class: probability}}` for logistic heads, ready for
        a sink.
        """
        outs: list[dict] = [{} for _ in windows]
        for level, w, b, spans in self._levels:
            for out, window in zip(outs, windows):
                s = affine(w, window[level], b)
                for head, first, end in spans:
                    if head["kind"] == "ridge":
                        value = s[first]
                        out[head["name"]] = value if math.isfinite(value) else None
                        continue
                    p = _softmax(s[first:end])
                    classes = head["classes"]
                    out[head["name"]] = classes[max(range(len(p)), key=p.__getitem__)]
                    out[head["name"] + "_p"] = dict(zip(classes, p))
        return outs
