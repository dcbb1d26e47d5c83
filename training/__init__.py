"""PyTorch side of HiMAE: model, data, masked pretraining, export to model files.

Names are resolved on first use, so `himae` can list its `train` and `export`
subcommands (and say what to install) on a machine without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CONFIGS": "training.configs",
    "get_config": "training.configs",
    "HiMAE": "training.model",
    "export_model": "training.export",
    "load_checkpoint": "training.export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
