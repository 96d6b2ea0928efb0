"""Missing-modality protocols: whole modalities, scattered elements, contiguous stretches.

Every protocol takes a `MultimodalBatch` and a `torch.Generator` and returns a
new batch; the input is never modified, so one clean batch can be evaluated
under many protocols. Draws come only from the generator, so a fixed seed
gives fixed masks. They are drawn per batch over its padded shape: evaluate
with an unshuffled loader and a fixed batch size to reproduce masks exactly.

Whatever the protocol, a dropped element has its feature row zeroed and its
mask set False, and a modality left with no real element gets present=False.

Modality-level patterns and their MPLMM codes (L = text, A = audio, V = vision):

====  ======================  ==========
code  name                    dropped
====  ======================  ==========
0     missing_text            L
1     missing_audio           A
2     missing_vision          V
3     missing_text_audio      L, A
4     missing_text_vision     L, V
5     missing_audio_vision    A, V
6     complete                (none)
====  ======================  ==========
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..model.types import MODALITIES, MultimodalBatch

PATTERNS: dict[str, tuple[str, ...]] = {
    "complete": (),
    "missing_text": ("text",),
    "missing_audio": ("audio",),
    "missing_vision": ("vision",),
    "missing_text_audio": ("text", "audio"),
    "missing_text_vision": ("text", "vision"),
    "missing_audio_vision": ("audio", "vision"),
}
"""Dropped modalities per pattern; "complete" first (MPLMM codes: module docstring)."""

ELEMENT_RATES = tuple(round(0.1 * i, 1) for i in range(10))
TEMPORAL_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
KINDS = ("modality", "element", "temporal", "all")


@runtime_checkable
class MissingProtocol(Protocol):
    """A named, seeded way of removing information from a batch."""

    @property
    def name(self) -> str: ...

    def apply(self, batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch: ...


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """U[0, 1) from `generator` on its own device, moved to the batch's device."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _keep_only(batch: MultimodalBatch, keep: dict[str, Tensor]) -> MultimodalBatch:
    """A new batch with masks `mask & keep`: dropped rows zeroed, emptied modalities missing."""
    masks = {m: batch.masks[m] & keep[m] for m in MODALITIES}
    features = {m: batch.features[m].masked_fill(~masks[m].unsqueeze(-1), 0.0) for m in MODALITIES}
    still_there = torch.stack([masks[m].any(dim=1) for m in MODALITIES], dim=1)
    return replace(
        batch,
        features=features,
        masks=masks,
        present=batch.present & still_there,
        labels=None if batch.labels is None else batch.labels.clone(),
        ids=None if batch.ids is None else list(batch.ids),
    )


def _drop_modalities(batch: MultimodalBatch, dropped: Tensor) -> MultimodalBatch:
    """Drop whole modalities where `dropped` (B, 3) is True."""
    keep = {
        m: (~dropped[:, j]).unsqueeze(1).expand_as(batch.masks[m]) for j, m in enumerate(MODALITIES)
    }
    return _keep_only(batch, keep)


def _check_fraction(value: float, what: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {value}")


_PATTERN_DROPS = torch.tensor(
    [[m in dropped for m in MODALITIES] for dropped in PATTERNS.values()], dtype=torch.bool
)


@dataclass(frozen=True)
class ModalityPattern:
    """The same availability pattern for every sample (MPLMM's fixed-code evaluation)."""

    pattern: str

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; valid: {list(PATTERNS)}")

    @property
    def name(self) -> str:
        return self.pattern

    def apply(self, batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
        row = _PATTERN_DROPS[list(PATTERNS).index(self.pattern)].to(batch.present.device)
        return _drop_modalities(batch, row.expand_as(batch.present))


@dataclass(frozen=True)
class ElementMissing:
    """Each real token/frame of every modality dropped independently with probability `rate`."""

    rate: float

    def __post_init__(self) -> None:
        _check_fraction(self.rate, "element rate")

    @property
    def name(self) -> str:
        return f"element_{self.rate}"

    def apply(self, batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
        keep = {
            m: _uniform(tuple(batch.masks[m].shape), generator, batch.masks[m].device) >= self.rate
            for m in MODALITIES
        }
        return _keep_only(batch, keep)


@dataclass(frozen=True)
class TemporalMissing:
    """One contiguous stretch per modality and sample, `fraction` of its real length, dropped.

    Models a camera freeze, a microphone drop-out or ASR lag inside a window. The
    stretch covers round(fraction * L) of the L real elements (at least one when
    fraction > 0) and starts uniformly among the positions where it fits.
    """

    fraction: float

    def __post_init__(self) -> None:
        _check_fraction(self.fraction, "temporal fraction")

    @property
    def name(self) -> str:
        return f"temporal_{self.fraction}"

    def apply(self, batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
        keep = {}
        for m in MODALITIES:
            mask = batch.masks[m]
            length = mask.sum(dim=1)
            span = torch.floor(self.fraction * length + 0.5).long()
            if self.fraction > 0:
                span = torch.where(length > 0, span.clamp(min=1), span)
            span = torch.minimum(span, length)
            start = (_uniform((len(mask),), generator, mask.device) * (length - span + 1)).long()
            rank = mask.long().cumsum(dim=1) - 1
            inside = (rank >= start.unsqueeze(1)) & (rank < (start + span).unsqueeze(1))
            keep[m] = ~(mask & inside)
        return _keep_only(batch, keep)


@dataclass(frozen=True)
class RandomMissing:
    """Training-time missingness, MPLMM style, plus optional element-level noise.

    With probability `drop_rate` a sample gets one of the six non-complete
    patterns, uniformly among those that leave it at least one modality it
    has; otherwise it stays complete. With `element_noise` > 0, each sample
    then loses elements at its own rate drawn uniformly from [0, element_noise].
    """

    drop_rate: float = 0.7
    element_noise: float = 0.0

    def __post_init__(self) -> None:
        _check_fraction(self.drop_rate, "drop_rate")
        _check_fraction(self.element_noise, "element_noise")

    @property
    def name(self) -> str:
        return f"random_{self.drop_rate}_{self.element_noise}"

    def apply(self, batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
        device = batch.present.device
        size = batch.batch_size
        drops = _PATTERN_DROPS[_PATTERN_DROPS.any(dim=1)].to(device)  # the six non-complete
        leaves_some = (batch.present.unsqueeze(1) & ~drops.unsqueeze(0)).any(dim=2)  # (B, 6)
        scores = _uniform((size, len(drops)), generator, device).masked_fill(~leaves_some, -1.0)
        choice = scores.argmax(dim=1)
        hit = (_uniform((size,), generator, device) < self.drop_rate) & leaves_some.any(dim=1)
        dropped = drops[choice] & hit.unsqueeze(1)
        out = _drop_modalities(batch, dropped)
        if self.element_noise > 0:
            rate = self.element_noise * _uniform((size, 1), generator, device)
            keep = {
                m: _uniform(tuple(out.masks[m].shape), generator, device) >= rate
                for m in MODALITIES
            }
            out = _keep_only(out, keep)
        return out


@dataclass(frozen=True)
class Both:
    """Two protocols in turn: e.g. late text while the camera froze for a stretch."""

    first: MissingProtocol
    second: MissingProtocol

    @property
    def name(self) -> str:
        return f"{self.first.name}+{self.second.name}"

    def apply(self, batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
        return self.second.apply(self.first.apply(batch, generator), generator)


def protocol_settings(kind: str) -> list[MissingProtocol]:
    """The evaluation grid for one kind of missingness, or for all of them."""
    groups: dict[str, list[MissingProtocol]] = {
        "modality": [ModalityPattern(p) for p in PATTERNS],
        "element": [ElementMissing(r) for r in ELEMENT_RATES],
        "temporal": [TemporalMissing(f) for f in TEMPORAL_FRACTIONS],
    }
    if kind == "all":
        return [p for group in groups.values() for p in group]
    if kind not in groups:
        raise ValueError(f"unknown protocol kind {kind!r}; valid kinds: {list(KINDS)}")
    return groups[kind]
