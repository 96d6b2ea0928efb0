"""Fusion model, missing-modality evaluator, losses and checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import LossWeights, ModelConfig
from .evaluator import ThresholdCalibration, calibrate_thresholds
from .fusion import FusionModel
from .types import MODALITIES, FusionOutput, MultimodalBatch

__all__ = [
    "MODALITIES",
    "FusionModel",
    "FusionOutput",
    "LossWeights",
    "ModelConfig",
    "MultimodalBatch",
    "ThresholdCalibration",
    "calibrate_thresholds",
    "load_checkpoint",
    "save_checkpoint",
]
