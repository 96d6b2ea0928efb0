"""Batched building blocks.

Tensors are group-major, (G, B, L, d): the six cross-modal pairs and the three per-modality
self-attention stacks each run as G independent parameter sets in one `baddbmm` per
projection instead of a Python loop over groups. At batch 1 the cost is kernel launches,
not arithmetic, so fewer, larger calls are what keeps the fusion model inside its budget.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PE_CACHE = 512


def sinusoid_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(length, dim) sinusoidal positions: defined for any length, nothing learned per index."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class Positions(nn.Module):
    """Sinusoidal positions with a cached table; longer windows get a fresh table."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("table", sinusoid_positions(PE_CACHE, dim), persistent=False)

    def forward(self, length: int) -> Tensor:
        if length <= self.table.shape[0]:
            return self.table[:length]
        return sinusoid_positions(length, self.dim, self.table.device).to(self.table.dtype)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x (..., L, d) over the True positions of mask (..., L); 0 where none is True."""
    m = mask.to(x.dtype).unsqueeze(-2)  # (..., 1, L)
    total = (m @ x).squeeze(-2)
    return total / m.sum(-1).clamp_min(1.0)


def masked_softmax(logits: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over the True entries; exactly 0 elsewhere and all-0 where none is True.

    A finite fill (not -inf) keeps both values and gradients free of NaN for empty rows.
    """
    fill = torch.finfo(logits.dtype).min
    return torch.softmax(logits.masked_fill(~mask, fill), dim) * mask


def additive_mask(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """(G, B, L) key validity -> (G*B, 1, 1, L) additive attention mask (0 or -inf)."""
    g, b, length = valid.shape
    mask = torch.zeros(g * b, 1, 1, length, dtype=dtype, device=valid.device)
    return mask.masked_fill(~valid.reshape(g * b, 1, 1, length), float("-inf"))


class GroupedLinear(nn.Module):
    """G independent affine maps over x (G, N, d_in) in one batched matmul."""

    def __init__(self, groups: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(groups, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(groups, 1, d_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class GroupedBlock(nn.Module):
    """Pre-LN transformer block with one parameter set per group.

    With `context` the queries come from x and keys/values from context (cross-modal
    attention); without it, it is self-attention. Pre-norms carry no affine because they
    feed a linear map only, which absorbs any scale and shift; for the same reason the
    context arrives already normalised, once for all layers that read it. Dropout acts on
    the residual branches only: dropout inside CPU SDPA costs several times the attention.
    """

    def __init__(self, groups: int, d: int, heads: int, ff: int, dropout: float, cross: bool):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.cross = cross
        if cross:
            self.q = GroupedLinear(groups, d, d)
            self.kv = GroupedLinear(groups, d, 2 * d)
        else:
            self.qkv = GroupedLinear(groups, d, 3 * d)
        self.out = GroupedLinear(groups, d, d)
        self.ff1 = GroupedLinear(groups, d, ff)
        self.ff2 = GroupedLinear(groups, ff, d)

    def _split_heads(self, x: Tensor, parts: int, length: int) -> tuple[Tensor, ...]:
        """(G, B*L, parts*d) -> `parts` tensors of shape (G*B, heads, L, d/heads)."""
        g, n, width = x.shape
        dh = width // (parts * self.heads)
        x = x.view(g * (n // length), length, parts, self.heads, dh).permute(2, 0, 3, 1, 4)
        return x.unbind(0)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        context: Tensor | None = None,
        x_normed: Tensor | None = None,
    ) -> Tensor:
        """x (G, B, L, d); mask (G*B, 1, 1, Lk) additive; normalised context (G, B, Lk, d);
        x_normed: layer_norm(x) when the caller already has it."""
        g, b, length, d = x.shape
        p = self.dropout if self.training else 0.0
        h = F.layer_norm(x, (d,)) if x_normed is None else x_normed
        h = h.view(g, b * length, d)
        if context is None:
            q, k, v = self._split_heads(self.qkv(h), 3, length)
        else:
            lk = context.shape[2]
            (q,) = self._split_heads(self.q(h), 1, length)
            k, v = self._split_heads(self.kv(context.view(g, b * lk, d)), 2, lk)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        a = a.transpose(1, 2).reshape(g, b * length, d)
        x = x + F.dropout(self.out(a), p, self.training).view(g, b, length, d)
        h = F.layer_norm(x, (d,)).view(g, b * length, d)
        h = self.ff2(F.gelu(self.ff1(h)))
        return x + F.dropout(h, p, self.training).view(g, b, length, d)
