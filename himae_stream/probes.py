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


def prepare(heads: list[dict]) -> list[dict]:
    """Heads with their parameters as float64 arrays, converted once rather than per window."""
    return [{**h, **{k: np.asarray(h[k], dtype=np.float64) for k in ("mean", "std", "weights", "bias")}}
            for h in heads]


def scores(head: dict, embeddings) -> np.ndarray:
    """Raw linear outputs `(n, outputs)` for embeddings `(n, dim)` or `(dim,)` of the head's level."""
    e = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    z = (e - np.asarray(head["mean"])) / np.asarray(head["std"])
    return z @ np.asarray(head["weights"], dtype=np.float64).T + np.asarray(head["bias"])


def predict(head: dict, embeddings) -> np.ndarray:
    """Predictions for `(n, dim)` embeddings: values (ridge) or class names (logistic)."""
    s = scores(head, embeddings)
    if head["kind"] == "ridge":
        return s[:, 0]
    return np.asarray(head["classes"], dtype=object)[np.argmax(s, axis=1)]


def probabilities(head: dict, embeddings) -> np.ndarray:
    """Class probabilities `(n, classes)` of a logistic head."""
    s = scores(head, embeddings)
    s -= s.max(axis=1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(axis=1, keepdims=True)


def apply(heads: list[dict], level_embeddings: list) -> dict:
    """Every head's prediction for one window, given its per-level mean embeddings.

    Returns `{name: value}` (float) for ridge heads and `{name: class}` plus
    `{name + "_p": {class: probability}}` for logistic heads, ready for a sink.
    """
    out: dict = {}
    for head in heads:
        e = level_embeddings[head["level"]]
        if head["kind"] == "ridge":
            value = float(predict(head, e)[0])
            out[head["name"]] = value if math.isfinite(value) else None
        else:
            p = probabilities(head, e)[0]
            out[head["name"]] = head["classes"][int(np.argmax(p))]
            out[head["name"] + "_p"] = {c: float(v) for c, v in zip(head["classes"], p)}
    return out
