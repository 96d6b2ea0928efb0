"""Imagination: one generator per modality, producing it in d-space from the others.

Each generator is a set of learned query tokens (generative prompts) that attend over
the tokens of the available other modalities. Attention over whatever tokens exist works
at any window length, unlike MPLMM's time-axis convolutions sized to the training T.
The three generators share one attention call: their queries sit side by side and a
mask keeps target m's queries off modality m's own tokens and off missing ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .types import MODALITIES


class Imagination(nn.Module):
    """Generators for all three modalities in one cross-attention + feed-forward block."""

    def __init__(self, d: int, heads: int, length: int, ff: int, dropout: float) -> None:
        super().__init__()
        m = len(MODALITIES)
        self.heads = heads
        self.length = length
        self.dropout = dropout
        self.queries = nn.Parameter(torch.randn(m * length, d) * 0.1)
        self.null = nn.Parameter(torch.randn(1, 1, d) * 0.1)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        # foreign[query of target i, modality j]: j != i, so no generator sees its own target
        owner = torch.arange(m).repeat_interleave(length)
        foreign = owner[:, None] != torch.arange(m)[None, :]
        self.register_buffer("foreign", foreign, persistent=False)

    def forward(self, tokens: Tensor, valid: Tensor) -> Tensor:
        """tokens (3, B, T, d), valid (3, B, T) -> imagined tokens (3, B, length, d).

        A null key is always visible, so a generator with nothing to look at (a sample
        with only its own modality, or none) yields a learned default, never NaN.
        """
        m, b, t, d = tokens.shape
        dh = d // self.heads
        keys = torch.cat(
            [self.null.expand(b, 1, d), tokens.transpose(0, 1).reshape(b, m * t, d)], 1
        )
        k, v = self.kv(F.layer_norm(keys, (d,))).view(b, 1 + m * t, 2, self.heads, dh).unbind(2)
        q = self.q(self.queries).view(1, m * self.length, self.heads, dh).transpose(1, 2)
        allowed = self.foreign[None, :, :, None] & valid.transpose(0, 1)[:, None, :, :]
        allowed = torch.cat([allowed.new_ones(b, m * self.length, 1), allowed.flatten(2)], 2)
        mask = torch.zeros(allowed.shape, dtype=tokens.dtype, device=tokens.device)
        mask = mask.masked_fill(~allowed, float("-inf")).unsqueeze(1)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(
            q.expand(b, -1, -1, -1),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
        )
        x = self.queries + F.dropout(
            self.out(a.transpose(1, 2).reshape(b, -1, d)), p, self.training
        )
        x = x + F.dropout(self.ff(x), p, self.training)
        return x.view(b, m, self.length, d).transpose(0, 1)
