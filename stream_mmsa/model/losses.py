"""Training losses of the fusion model; `compute_training_losses` is the one entry point.

Two flows run on the same samples: the complete flow (before the missing protocol) and
the missing flow (after it). The complete flow is the teacher: it supplies feature
targets for self-distillation and reconstruction targets for the generators, always with
stop-gradient on the teacher side. The evaluator is not trained here: it learns its
decision afterwards on a frozen backbone (`evaluator.fit_evaluator`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import LossWeights
from .types import MODALITIES, MultimodalBatch

if TYPE_CHECKING:
    from .fusion import FusionModel

TERMS = (
    "task_complete",
    "task_missing",
    "distill_feature",
    "disentangle",
    "imagine_recon",
    "mi_critic",
    "confidence",
)
"""Logged terms; each has the LossWeights field of the same name as its weight."""


def task_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    return F.l1_loss(pred, target) if kind == "l1" else F.smooth_l1_loss(pred, target)


def laplace_nll(scale: Tensor, abs_error: Tensor) -> Tensor:
    """Negative log-likelihood of |error| under a Laplace of scale b (= expected |error|)."""
    return (abs_error / scale + scale.log()).mean()


def masked_mse(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error of a, b (N, M, d) over the (N, M) entries where mask is True."""
    if not bool(mask.any()):
        return a.sum() * 0.0
    return (a - b).pow(2).mean(-1)[mask].mean()


def compute_training_losses(
    model: FusionModel,
    complete: MultimodalBatch,
    missing: MultimodalBatch,
    weights: LossWeights,
    distill: bool,
) -> dict[str, Tensor]:
    """Every loss term plus "total" = Σ weight · term (disabled terms are logged as 0).

    In the missing flow each missing modality is imagined with probability
    weights.imagine_prob, so both the imagine and the adapt-without paths the gate chooses
    between are trained, alone and in combination. Side effect: the MI reference bank is
    refreshed with the complete flow's target summaries.
    """
    if complete.labels is None:
        raise ValueError("training_losses needs labels on the complete batch")
    label = complete.labels.to(complete.features[MODALITIES[0]].dtype)
    lacking = ~missing.present.bool()
    coin = torch.rand(lacking.shape, device=lacking.device) < weights.imagine_prob
    # The backbone learns the generators and the adapt-without path; recalled text is
    # text, which it already reads, and whether to use it is the evaluator's call.
    teacher = model.run(replace(complete, recalled=None), "always", generators=True)
    student = model.run(replace(missing, recalled=None), imagine_mask=coin, generators=True)
    ta, sa = teacher.aux, student.aux
    zero = label.new_zeros(())
    terms = dict.fromkeys(TERMS, zero)

    terms["task_complete"] = task_loss(teacher.score, label, weights.task_loss)
    terms["task_missing"] = task_loss(student.score, label, weights.task_loss)
    terms["confidence"] = laplace_nll(ta["scale"], (teacher.score.detach() - label).abs())
    terms["confidence"] = terms["confidence"] + laplace_nll(
        sa["scale"], (student.score.detach() - label).abs()
    )
    if distill:
        both = sa["used"] & ta["used"]
        terms["distill_feature"] = F.mse_loss(sa["fused"], ta["fused"].detach()) + masked_mse(
            sa["streams"], ta["streams"].detach(), both
        )
    if model.prompts is not None:
        terms["disentangle"] = model.prompts.disentangle_loss()
    real = ta["pooled"].detach()
    has = complete.present.bool()
    terms["imagine_recon"] = masked_mse(ta["imagined_summary"], real, has) + masked_mse(
        sa["imagined_summary"], real, has & lacking
    )
    if model.weighting is not None:
        for flow in (ta, sa):
            nce = model.weighting.critic_loss(
                flow["pair_pool"], flow["target_pool"], flow["pair_ok"]
            )
            terms["mi_critic"] = terms["mi_critic"] + nce
    if model.weighting is not None:
        model.weighting.update_bank(ta["target_pool"], ta["used"])

    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return {"total": total, **terms}
