"""Mutual-information critic behind the dynamic prompt weighting.

For each ordered pair p = (target t ← source s) a low-rank bilinear critic
f_p(x, y) = <x A_p, y C_p> / sqrt(k) scores what the cross-attention brought from s
(x: the pooled update) against the target stream itself (y). It is trained with InfoNCE
on in-batch negatives. At inference the pointwise MI estimate
f_p(x, y) − log mean_k exp f_p(x, y_k) uses a fixed bank of reference targets y_k
instead of the batch, so a window's weights never depend on which other sessions'
windows share its batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MICritic(nn.Module):
    """One bilinear InfoNCE critic per ordered modality pair, evaluated in one bmm."""

    def __init__(self, pairs: int, d: int, rank: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(pairs, d, rank) / math.sqrt(d))
        self.c = nn.Parameter(torch.randn(pairs, d, rank) / math.sqrt(d))
        self.scale = 1.0 / math.sqrt(rank)

    def pmi(self, x: Tensor, y: Tensor, bank: Tensor) -> Tensor:
        """x, y (P, B, d); bank (P, K, d) reference targets -> pointwise MI estimate (P, B)."""
        xa = x @ self.a
        positive = (xa * (y @ self.c)).sum(-1) * self.scale
        reference = (xa @ (bank @ self.c).transpose(1, 2)) * self.scale
        return positive - (torch.logsumexp(reference, -1) - math.log(bank.shape[1]))

    def infonce(self, x: Tensor, y: Tensor, ok: Tensor) -> Tensor:
        """InfoNCE loss over in-batch negatives; ok (P, B) marks pairs whose streams exist."""
        scores = (x @ self.a) @ (y @ self.c).transpose(1, 2) * self.scale  # (P, B, B)
        fill = torch.finfo(scores.dtype).min
        logp = scores.masked_fill(~ok[:, None, :], fill).log_softmax(-1)
        logp = logp.diagonal(dim1=1, dim2=2)
        return -(logp * ok).sum() / ok.sum().clamp_min(1)
