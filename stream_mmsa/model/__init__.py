"""Fusion model, missing-modality evaluator, losses and checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import LossWeights, ModelConfig
from .evaluator import EvaluatorFit, ThresholdCalibration, fit_evaluator, score_decisions
from .fusion import FusionModel
from .types import MODALITIES, FusionOutput, MultimodalBatch

__all__ = [
    "MODALITIES",
    "EvaluatorFit",
    "FusionModel",
    "FusionOutput",
    "LossWeights",
    "ModelConfig",
    "MultimodalBatch",
    "ThresholdCalibration",
    "fit_evaluator",
    "load_checkpoint",
    "save_checkpoint",
    "score_decisions",
]
