"""himae-stream: a streaming edge runtime for HiMAE wearable-signal models.

The runtime never imports torch: PyTorch lives in `training/` only.
"""

from himae_stream.errors import HimaeError, ModelFileError

__all__ = ["HimaeError", "ModelFileError"]
__version__ = "0.1.0"
