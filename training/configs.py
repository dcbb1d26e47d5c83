"""Named HiMAE configurations.

A configuration is a plain dict so it can be stored unchanged in checkpoints
and model files; every architectural and preprocessing choice lives here,
none is a constant in the model code.
"""

from __future__ import annotations

import copy

from himae_stream.normalize import default_spec

_BASE = {
    "in_channels": 1,
    "channel_names": ["PPG"],
    "kernel_size": 5,
    "stride": 2,
    "patch_size": 5,
    "mask_ratio": 0.8,
    "decoder": True,
}

CONFIGS: dict[str, dict] = {
    "himae-100": {
        **_BASE,
        "name": "himae-100",
        "fs": 100.0,
        "window": 1000,
        "channels": [16, 32, 64, 128, 256],
        "normalizer": default_spec("stream"),
    },
    "himae-25": {
        **_BASE,
        "name": "himae-25",
        "fs": 25.0,
        "window": 250,
        "channels": [16, 32, 64, 128],
        "normalizer": default_spec("stream"),
    },
}


def get_config(name: str, **overrides) -> dict:
    """A deep copy of a named configuration with `overrides` applied."""
    if name not in CONFIGS:
        raise ValueError(f"unknown configuration {name!r} (known: {', '.join(CONFIGS)})")
    config = copy.deepcopy(CONFIGS[name])
    config.update(copy.deepcopy(overrides))
    return config


def level_lengths(config: dict) -> list[int]:
    """Positions per encoder level: ceil(window / 2^(l+1))."""
    return [-(-config["window"] // 2 ** (level + 1)) for level in range(len(config["channels"]))]
