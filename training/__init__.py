"""PyTorch side of HiMAE: model, data, masked pretraining, export to model files."""

from training.configs import CONFIGS, get_config
from training.export import export_model, load_checkpoint
from training.model import HiMAE

__all__ = ["CONFIGS", "HiMAE", "export_model", "get_config", "load_checkpoint"]
