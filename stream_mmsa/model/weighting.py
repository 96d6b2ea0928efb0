"""Dynamic prompt weighting: mutual-information estimates -> weights over streams.

For each ordered pair p = (target t ← source s) a low-rank bilinear critic
f_p(x, y) = <x A_p, y C_p> / sqrt(k) scores what the cross-attention brought from s
(x: the pooled update of t's stream) against the target stream itself (y). The critic is
trained only by InfoNCE on detached features with in-batch negatives, so it stays an MI
estimator rather than becoming another task-trained gate. At inference the pointwise MI
f_p(x, y) − log mean_k exp f_p(x, y_k) uses a fixed bank of reference targets y_k, not
the batch, so a window's weights never depend on which other windows share its batch.
The MI values then set (a) the mix of a target's two cross-modal updates and (b) the
softmax weights over the three streams, through one learned temperature plus
per-modality and imagined-stream biases. The temperature starts at 0 (uniform mix and
weights): the critic is untrained at the first step, so its MI estimates are noise, and
the temperature grows only as far as they prove useful (on the synthetic ablation,
starting at 1 left the prompted model behind the no-prompt one; see docs/ablation.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .layers import masked_softmax
from .types import MODALITIES

PAIR_TARGET = (0, 0, 1, 1, 2, 2)
PAIR_SOURCE = (1, 2, 0, 2, 0, 1)
"""The six ordered pairs (target <- source), grouped by target so pairs view as (3, 2)."""


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


class StreamWeighting(nn.Module):
    """MI critic, reference bank and the learned map from MI estimates to weights."""

    def __init__(self, d: int, rank: int, bank_size: int) -> None:
        super().__init__()
        m = len(MODALITIES)
        self.critic = MICritic(len(PAIR_TARGET), d, rank)
        self.temperature = nn.Parameter(torch.zeros(()))
        self.modality_bias = nn.Parameter(torch.zeros(m, 1))
        self.imagined_bias = nn.Parameter(torch.zeros(m, 1))
        self.register_buffer("bank", torch.zeros(m, bank_size, d))
        self.register_buffer("pair_target", torch.tensor(PAIR_TARGET), persistent=False)

    def forward(
        self,
        pair_pool: Tensor,
        target_pool: Tensor,
        pair_ok: Tensor,
        used: Tensor,
        imagined: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """pair_pool (6, B, d), target_pool (3, B, d), pair_ok (6, B), used/imagined (3, B)
        -> mix (3, 2, B) over each target's two sources, weights (3, B) over streams."""
        m, b = used.shape
        with torch.no_grad():
            pmi = self.critic.pmi(
                pair_pool,
                target_pool.index_select(0, self.pair_target),
                self.bank.index_select(0, self.pair_target),
            ).view(m, 2, b)
        mix = masked_softmax(self.temperature * pmi, pair_ok.view(m, 2, b), dim=1)
        logits = self.temperature * (mix * pmi).sum(1) + self.modality_bias
        logits = logits + self.imagined_bias * imagined
        return mix, masked_softmax(logits, used, dim=0)

    def critic_loss(self, pair_pool: Tensor, target_pool: Tensor, pair_ok: Tensor) -> Tensor:
        """InfoNCE of the critic on detached features (it never trains the backbone)."""
        targets = target_pool.index_select(0, self.pair_target).detach()
        return self.critic.infonce(pair_pool.detach(), targets, pair_ok)

    @torch.no_grad()
    def update_bank(self, target_pool: Tensor, used: Tensor) -> None:
        """Push the newest used target summaries (3, B, d) into the reference bank."""
        size = self.bank.shape[1]
        for j in range(self.bank.shape[0]):
            rows = target_pool[j][used[:, j]].detach()[-size:]
            if rows.numel():
                self.bank[j] = torch.cat([rows, self.bank[j]])[:size]
