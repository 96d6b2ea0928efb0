"""The missing-modality evaluator and the calibration of its gate.

For every sample and every missing modality m the evaluator predicts the gain of feeding
the imagined m over adapting without it: gain = |ŷ_skip − y*| − |ŷ_imagine_m − y*|, where
y* is a pseudo label from the complete flow (no label exists at inference). Its inputs are
what is known before fusion: pooled features of the available modalities, a summary of
the imagined m and the availability pattern. The model imagines m iff gain > τ[p, m],
with a threshold per availability pattern p and modality m, calibrated on validation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .prompts import N_PATTERNS, pattern_index
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
    """Outcome of `calibrate_thresholds`: τ (pattern, modality) and the validation MAE it buys.

    per_pattern maps each calibrated pattern index to its validation MAE under τ = 0,
    always, never and the calibrated row, and its sample count.
    """

    tau: list[list[float]]
    mae_at_zero: float
    mae_calibrated: float
    samples: int
    per_pattern: dict[int, dict[str, float]]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _abs_errors(pred: Tensor, label: Tensor, gain: Tensor, missing: Tensor, tau: Tensor) -> Tensor:
    """(N,) |error| when each missing m is imagined iff gain > τ_m; pred (N, 8) per subset."""
    imagine = missing & (gain > tau)
    subset = (imagine.long() * torch.tensor([1, 2, 4])).sum(-1)
    chosen = pred.gather(1, subset[:, None]).squeeze(1)
    return (chosen - label).abs().double()


def _calibrate_pattern(
    pred: Tensor,
    label: Tensor,
    gain: Tensor,
    missing: Tensor,
    levels: Tensor,
    rounds: int,
    min_z: float,
) -> tuple[Tensor, dict[str, float]]:
    """τ row (3,) for samples sharing one availability pattern, and its mean |errors|.

    Starts from the better of always (−inf) and never (+inf) imagine, so on these samples
    it is never worse than either. Any other τ_m (±inf, 0 or a quantile of the predicted
    gains) must beat the incumbent by a paired improvement of at least min_z standard
    errors: when the gains carry little signal, a threshold that wins on validation by
    chance would only add noise on new data.
    """
    cols = missing.any(0)
    policies = {
        "zero": torch.zeros(3),
        "always": torch.where(cols, -math.inf, 0.0),
        "never": torch.where(cols, math.inf, 0.0),
    }
    errors = {k: _abs_errors(pred, label, gain, missing, t) for k, t in policies.items()}
    name = min(("never", "always"), key=lambda k: float(errors[k].mean()))
    tau, best = policies[name].clone(), errors[name]
    for _ in range(rounds):
        improved = False
        for j in torch.nonzero(cols).flatten().tolist():
            for value in [-math.inf, math.inf, 0.0, *gain[:, j].quantile(levels).tolist()]:
                trial = tau.clone()
                trial[j] = value
                err = _abs_errors(pred, label, gain, missing, trial)
                diff = best - err
                mean = float(diff.mean())
                se = float(diff.std()) / math.sqrt(diff.numel()) if diff.numel() > 1 else 0.0
                if mean > 1e-9 and mean >= min_z * se:
                    best, tau, improved = err, trial, True
        if not improved:
            break
    means = {k: float(v.mean()) for k, v in errors.items()}
    return tau, {**means, "calibrated": float(best.mean())}


@torch.inference_mode()
def calibrate_thresholds(
    model: FusionModel,
    batches: Iterable[MultimodalBatch],
    candidates: int = 41,
    rounds: int = 4,
    min_z: float = 2.0,
) -> ThresholdCalibration:
    """Pick the gate's τ (N_PATTERNS, 3) on labelled, protocol-applied validation batches.

    Sets model.tau. Every subset of imagined modalities is scored once per batch, so the
    search itself is cheap. Patterns are disjoint sets of samples, so each pattern's row
    is searched on its own samples (`_calibrate_pattern`): per pattern, the result is
    never worse on these batches than always or never imagine, and a threshold in
    between (τ = 0 included) must beat that by min_z standard errors. Patterns absent
    from the batches keep their current row.
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
    tau = model.tau.detach().float().cpu()
    result = search_thresholds(pred, label, gain, miss, tau, candidates, rounds, min_z)
    model.tau.copy_(torch.tensor(result.tau).to(model.tau))
    return result


def search_thresholds(
    pred: Tensor,
    label: Tensor,
    gain: Tensor,
    missing: Tensor,
    tau: Tensor,
    candidates: int = 41,
    rounds: int = 4,
    min_z: float = 2.0,
) -> ThresholdCalibration:
    """The search behind `calibrate_thresholds`, on scored samples.

    pred (N, 8) score per imagined subset (bit j = modality j), label (N,), gain (N, 3),
    missing (N, 3) bool, tau (N_PATTERNS, 3) the current rows, kept for absent patterns.
    """
    pattern = pattern_index(~missing)
    levels = torch.linspace(0.0, 1.0, candidates)
    tau = tau.clone()
    per_pattern: dict[int, dict[str, float]] = {}
    for p in pattern.unique().tolist():
        rows = pattern == p
        tau[p], errors = _calibrate_pattern(
            pred[rows], label[rows], gain[rows], missing[rows], levels, rounds, min_z
        )
        per_pattern[p] = errors | {"samples": int(rows.sum())}
    total = label.numel()
    zero = sum(v["zero"] * v["samples"] for v in per_pattern.values()) / total
    best = sum(v["calibrated"] * v["samples"] for v in per_pattern.values()) / total
    return ThresholdCalibration(tau.tolist(), zero, best, int(total), per_pattern)


def repeat_batch(batch: MultimodalBatch, times: int) -> MultimodalBatch:
    """The batch stacked `times` times along the batch axis (for scoring decision variants)."""
    return MultimodalBatch(
        features={m: x.repeat(times, *([1] * (x.dim() - 1))) for m, x in batch.features.items()},
        masks={m: x.repeat(times, 1) for m, x in batch.masks.items()},
        present=batch.present.repeat(times, 1),
        labels=None if batch.labels is None else batch.labels.repeat(times),
    )
