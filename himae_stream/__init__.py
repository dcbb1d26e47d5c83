"""himae-stream: a streaming edge runtime for HiMAE wearable-signal models.

The runtime never imports torch: PyTorch lives in `training/` only.
"""

from himae_stream.errors import HimaeError, ModelFileError
from himae_stream.impute import ImputationWarning, impute

__all__ = ["HimaeError", "ImputationWarning", "ModelFileError", "impute"]
__version__ = "0.1.0"
