"""Tensors that cross the boundary between data, model and engine.

One batch type serves training on stored data and live windows alike, so the
model never needs to know where its inputs came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the constants below load without torch
    import torch
    from torch import Tensor

MODALITIES: tuple[str, str, str] = ("text", "audio", "vision")
"""Fixed modality order used by every (B, 3) tensor in the package."""

QUALITY_SIGNALS: tuple[str, ...] = ("recall_age", "recall_continues", "words", "recall_words")
"""What the evaluator is told about how far to trust what a window has, each in [0, 1]:

recall_age        age of the recalled text (s from its window's end to this window's end) / 10;
recall_continues  1 if no pause long enough to start a new utterance lies between the
                  recalled text and this window's end (the words still belong together);
words             words in the window's own text / 16 (0 when text is late or missing);
recall_words      words in the recalled text / 16 (0 when there is none).
"""


@dataclass
class MultimodalBatch:
    """Per-modality sequences with padding masks and a presence mask.

    features[m]: (B, T_m, D_m) float; T_m may differ per modality and per batch.
    masks[m]:    (B, T_m) bool, True where the element is real (not padding, not dropped).
    present:     (B, 3) bool in MODALITIES order; False means the modality is missing
                 for that sample and its features must be ignored.
    labels:      (B,) sentiment on the CMU-MOSI scale (-3..3), when known.
    recalled:    (B, T_r, D_text) the most recent text the stream had before this sample
                 (a live session's earlier window), what late text is imagined from;
                 recalled_mask (B, T_r) marks its real rows (all False: nothing to recall).
    quality:     (B, len(QUALITY_SIGNALS)) what the evaluator reads before deciding.
    None for any of the last three means "not known": zeros are used.
    """

    features: dict[str, Tensor]
    masks: dict[str, Tensor]
    present: Tensor
    labels: Tensor | None = None
    ids: list[str] | None = None
    recalled: Tensor | None = None
    recalled_mask: Tensor | None = None
    quality: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.present.shape[0])

    def to(self, device: torch.device | str) -> MultimodalBatch:
        return replace(
            self,
            features={m: x.to(device) for m, x in self.features.items()},
            masks={m: x.to(device) for m, x in self.masks.items()},
            present=self.present.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            recalled=None if self.recalled is None else self.recalled.to(device),
            recalled_mask=None if self.recalled_mask is None else self.recalled_mask.to(device),
            quality=None if self.quality is None else self.quality.to(device),
        )


@dataclass
class FusionOutput:
    """What the fusion model returns for each sample.

    score:      (B,) sentiment on -3..3.
    confidence: (B,) in [0, 1].
    weights:    (B, 3) contribution of each modality stream (0 for a skipped one).
    gain:       (B, 3) evaluator's predicted gain of imagining a missing modality
                over adapting without it (0 where the modality is present).
    imagined:   (B, 3) bool: the evaluator chose to imagine this missing modality.
    aux:        intermediate tensors the trainer's losses need (empty at inference).
    """

    score: Tensor
    confidence: Tensor
    weights: Tensor
    gain: Tensor
    imagined: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)
