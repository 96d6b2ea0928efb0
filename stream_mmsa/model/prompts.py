"""Prompts: a shared prompt disentangled into private ones, plus missing-type prompts.

P_m = P_s W_m + Δ_m. Read the two terms MISA-style: P_s W_m is modality m's view of the
shared (modality-invariant) prompt, Δ_m its modality-specific part. The similarity loss
keeps every view close to P_s; the difference loss keeps the specific parts orthogonal to
each other and to the shared view, so the private prompts cannot collapse into copies of
one another nor drift away from what is common. Small specific parts would still leave
every P_m a near copy of P_s (cosine 0.95 in models trained without it), so a hinge keeps
each private prompt's cosine with the shared one at most DISTINCT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .types import MODALITIES

DISTINCT = 0.5
"""Largest cosine a private prompt may keep with the shared one before the loss objects."""
N_PATTERNS = 2 ** len(MODALITIES)
"""Availability patterns indexed by presence bits (text=1, audio=2, vision=4).

Index 0 (nothing present) never occurs in the 7-pattern protocols but can in a live
window (silence, no face, no words); it gets its own prompt so the model still answers.
"""


def pattern_index(present: Tensor) -> Tensor:
    """(B, 3) bool presence -> (B,) long pattern index in [0, 8)."""
    bits = torch.tensor([1, 2, 4], device=present.device)
    return (present.long() * bits).sum(-1)


def _sq_cos(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared cosine similarity between the rows of a (..., L, d) and b (..., L, d)."""
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    return (a @ b.transpose(-1, -2)).pow(2).mean()


class PromptBank(nn.Module):
    """Shared, private and missing-type prompts and the per-layer shared-prompt gates α."""

    def __init__(self, d: int, length: int, levels: int) -> None:
        """levels: self-attention layers the shared prompt is re-joined to (0 = none)."""
        super().__init__()
        m = len(MODALITIES)
        self.shared = nn.Parameter(torch.randn(length, d) * 0.1)
        self.views = nn.Parameter(torch.eye(d).repeat(m, 1, 1))
        self.specific = nn.Parameter(torch.randn(m, length, d) * 0.02)
        self.missing_type = nn.Parameter(torch.randn(N_PATTERNS, m, length, d) * 0.1)
        self.alpha = nn.Parameter(torch.full((levels,), 0.1)) if levels else None

    def private(self) -> Tensor:
        """(3, L, d) private prompts P_m = P_s W_m + Δ_m."""
        return self.shared @ self.views + self.specific

    @torch.no_grad()
    def private_cosines(self) -> dict[str, float]:
        """Cosine of each private prompt with the shared one (flattened): near 1 means
        the private prompt is a copy of the shared one and says nothing of its own."""
        shared = self.shared.flatten()
        return {
            m: float(F.cosine_similarity(p.flatten(), shared, dim=0))
            for m, p in zip(MODALITIES, self.private(), strict=True)
        }

    def disentangle_loss(self) -> Tensor:
        """Similarity of each shared view to P_s + orthogonality of the specific parts +
        the hinge that keeps private prompts distinct from the shared one."""
        views = self.shared @ self.views  # (3, L, d)
        similarity = (1.0 - F.cosine_similarity(views, self.shared, dim=-1)).mean()
        s = self.specific
        difference = (_sq_cos(s[0], s[1]) + _sq_cos(s[0], s[2]) + _sq_cos(s[1], s[2])) / 3.0
        difference = difference + _sq_cos(s, views)
        private = (views + s).flatten(1)
        cosine = F.cosine_similarity(private, self.shared.flatten()[None], dim=-1)
        return similarity + difference + F.relu(cosine - DISTINCT).mean()
