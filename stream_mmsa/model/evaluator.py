"""The missing-modality evaluator and the calibration of its gate.

For every sample and every missing modality m the evaluator predicts the gain of feeding
the imagined m over adapting without it: gain = |ŷ_skip − y*| − |ŷ_imagine_m − y*|, where
y* is a pseudo label from the complete flow (no label exists at inference). Its inputs are
what is known before fusion: pooled features of the available modalities, a summary of
the imagined m and the availability pattern. The model imagines m iff gain > τ_m.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .prompts import N_PATTERNS
from .types import MODALITIES, MultimodalBatch

if TYPE_CHECKING:
    from .fusion import FusionModel


class MissingModalityEvaluator(nn.Module):
    """Gain head shared by the three modalities; a per-modality bias tells them apart.

    Split into a per-sample part (available features, pattern) and a per-modality part
    (imagined summary), summed before the non-linearity, so (B, 3) gains cost two matmuls.
    """

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        m = len(MODALITIES)
        self.pattern = nn.Embedding(N_PATTERNS, hidden)
        self.context = nn.Linear(m * d, hidden)
        self.imagined = nn.Linear(d, hidden)
        self.modality = nn.Parameter(torch.zeros(m, hidden))
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, available: Tensor, imagined: Tensor, pattern: Tensor) -> Tensor:
        """available (B, 3, d) pooled real features, 0 where missing; imagined (B, 3, d)
        summaries; pattern (B,) -> predicted gain (B, 3)."""
        ctx = self.context(available.flatten(1)) + self.pattern(pattern)
        h = ctx[:, None, :] + self.imagined(imagined) + self.modality
        return self.head(h).squeeze(-1)


@dataclass
class ThresholdCalibration:
    """Outcome of `calibrate_thresholds`: τ per modality and the validation MAE it buys."""

    tau: list[float]
    mae_at_zero: float
    mae_calibrated: float
    samples: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _decision_mae(pred: Tensor, label: Tensor, gain: Tensor, missing: Tensor, tau: Tensor) -> float:
    """MAE when each missing m is imagined iff gain > τ_m; pred (N, 8) per imagined subset."""
    imagine = missing & (gain > tau)
    subset = (imagine.long() * torch.tensor([1, 2, 4])).sum(-1)
    chosen = pred.gather(1, subset[:, None]).squeeze(1)
    return float((chosen - label).abs().mean())


@torch.inference_mode()
def calibrate_thresholds(
    model: FusionModel, batches: Iterable[MultimodalBatch], candidates: int = 41, rounds: int = 4
) -> ThresholdCalibration:
    """Pick τ (3,) minimising MAE on labelled, protocol-applied validation batches; sets model.tau.

    Every subset of imagined modalities is scored once per batch, so the search itself
    is cheap: coordinate descent over each modality's candidates (0, ±inf, and quantiles
    of its predicted gains), starting from τ = 0 and taking only strict improvements, so
    the result is never worse than τ = 0 on these batches.
    """
    was_training = model.training
    model.eval()
    device = model.tau.device
    subsets = torch.tensor([[(s >> j) & 1 for j in range(3)] for s in range(8)], dtype=torch.bool)
    preds, labels, gains, missing = [], [], [], []
    for batch in batches:
        if batch.labels is None:
            raise ValueError("calibrate_thresholds needs labelled batches")
        batch = batch.to(device)
        n = batch.batch_size
        gain = model(batch, imagine="gate").gain
        masks = subsets.to(device).repeat_interleave(n, 0)
        out = model.run(repeat_batch(batch, 8), imagine_mask=masks)
        preds.append(out.score.view(8, n).T.float().cpu())
        labels.append(batch.labels.float().cpu())
        gains.append(gain.float().cpu())
        missing.append((~batch.present.bool()).cpu())
    model.train(was_training)
    if not preds:
        raise ValueError("calibrate_thresholds got no batches")
    pred, label, gain, miss = (torch.cat(x) for x in (preds, labels, gains, missing))
    tau = torch.zeros(3)
    start = best = _decision_mae(pred, label, gain, miss, tau)
    levels = torch.linspace(0.0, 1.0, candidates)
    for _ in range(rounds):
        improved = False
        for j in range(3):
            observed = gain[miss[:, j], j]
            if observed.numel() == 0:
                continue
            options = torch.cat([torch.tensor([-math.inf, math.inf]), observed.quantile(levels)])
            for value in options.tolist():
                trial = tau.clone()
                trial[j] = value
                mae = _decision_mae(pred, label, gain, miss, trial)
                if mae < best - 1e-9:
                    best, tau, improved = mae, trial, True
        if not improved:
            break
    model.tau.copy_(tau.to(model.tau))
    return ThresholdCalibration(tau.tolist(), start, best, int(label.numel()))


def repeat_batch(batch: MultimodalBatch, times: int) -> MultimodalBatch:
    """The batch stacked `times` times along the batch axis (for scoring decision variants)."""
    return MultimodalBatch(
        features={m: x.repeat(times, *([1] * (x.dim() - 1))) for m, x in batch.features.items()},
        masks={m: x.repeat(times, 1) for m, x in batch.masks.items()},
        present=batch.present.repeat(times, 1),
        labels=None if batch.labels is None else batch.labels.repeat(times),
    )
