"""himae-stream: a streaming edge runtime for HiMAE wearable-signal models.

The runtime never imports torch: PyTorch lives in `training/` only.
"""

from himae_stream.errors import HimaeError, ModelFileError
from himae_stream.impute import ImputationWarning, impute

__all__ = ["HimaeError", "ImputationWarning", "Model", "ModelFileError", "impute", "load_model", "run", "run_blocking"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The compiled C core is imported on first use, so `import himae_stream` stays cheap.
    if name in ("Model", "load_model"):
        from himae_stream import model

        return getattr(model, name)
    if name in ("run", "run_blocking"):
        from himae_stream import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'himae_stream' has no attribute {name!r}")
