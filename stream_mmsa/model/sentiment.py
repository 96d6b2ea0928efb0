"""The deployable sentiment model: an optional trainable text top over the fusion model.

Text features enter as the frozen bottom of the text encoder (cached in training,
computed live in serving); the last encoder layers, fine-tuned with the fusion
model, live here so one checkpoint holds everything that was trained and nothing
that comes from a package. A checkpoint may hold several fusion models trained alike
from different seeds (a seed ensemble): k-fold by video found two seeds' average better
than one on clips neither saw (README, `text-kfold`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import cpu_state, fusion_from_state, load_checkpoint, save_checkpoint
from .config import LossWeights
from .fusion import FusionModel
from .types import FusionOutput, MultimodalBatch


class SentimentModel(nn.Module):
    """fusion(text_top(batch)); with no text top the batch goes to the fusion model as is.

    `members`: further fusion models of the same shape (a seed ensemble). The first model's
    evaluator decides which missing modalities to imagine and every member follows that
    decision, so an ensemble decides once and its evaluator can be fitted on the averaged
    predictions (train/late_text.py); scores, confidences and weights are averaged. `fusion`
    (the first model) gives the shape; an ensemble is assembled from trained models and
    is never trained as one.
    """

    def __init__(
        self,
        fusion: FusionModel,
        text_top: nn.Module | None = None,
        members: Sequence[FusionModel] = (),
    ) -> None:
        super().__init__()
        if members and text_top is not None:
            raise ValueError("a seed ensemble shares the text encoder: no trained text layers")
        self.fusion = fusion
        self.text_top = text_top
        self.members = nn.ModuleList(members)

    def prepare(self, batch: MultimodalBatch) -> MultimodalBatch:
        """Run the trainable text layers over the text states (the window's and the recalled
        ones), leaving other modalities alone."""
        if self.text_top is None:
            return batch
        states = self.text_top(batch.features["text"], batch.masks["text"])
        recalled = batch.recalled
        if recalled is not None and batch.recalled_mask is not None:
            recalled = self.text_top(recalled, batch.recalled_mask)
        return replace(batch, features={**batch.features, "text": states}, recalled=recalled)

    @property
    def fusions(self) -> list[FusionModel]:
        return [self.fusion, *self.members]

    def keep_first(self, models: int) -> None:
        """Serve only the ensemble's first `models` fusion models: each costs a fusion pass
        per window, and its first model alone still decides what to imagine."""
        if models < 1:
            raise ValueError(f"an ensemble keeps at least one model, not {models}")
        self.members = nn.ModuleList(list(self.members)[: models - 1])

    def forward(self, batch: MultimodalBatch, imagine: str = "gate") -> FusionOutput:
        batch = self.prepare(batch)
        if not self.members:
            return self.fusion(batch, imagine=imagine)
        first = self.fusion(batch, imagine=imagine)
        outs = [first, *(f.run(batch, imagine_mask=first.imagined) for f in self.members)]

        def mean(name: str) -> torch.Tensor:
            return torch.stack([getattr(o, name) for o in outs]).mean(0)

        return FusionOutput(
            score=mean("score"),
            confidence=mean("confidence"),
            weights=mean("weights"),
            gain=first.gain,
            imagined=first.imagined,
        )

    def training_losses(
        self,
        complete: MultimodalBatch,
        missing: MultimodalBatch,
        weights: LossWeights,
        distill: bool,
    ) -> dict[str, torch.Tensor]:
        if self.members:
            raise RuntimeError("a seed ensemble is assembled from trained models, not trained")
        return self.fusion.training_losses(
            self.prepare(complete), self.prepare(missing), weights, distill=distill
        )

    def param_groups(self, lr: float, text_lr: float) -> list[dict[str, Any]]:
        """The fusion model and the pretrained text layers learn at their own rates."""
        groups: list[dict[str, Any]] = [{"params": list(self.fusion.parameters()), "lr": lr}]
        if self.text_top is not None:
            groups.append({"params": list(self.text_top.parameters()), "lr": text_lr})
        return groups


def save_sentiment_model(path: Path | str, model: SentimentModel, extra: dict[str, Any]) -> None:
    """One file: fusion weights + config (via save_checkpoint), the text top's state and
    an ensemble's further members (their state dicts; they share the first one's config)."""
    extra = dict(extra)
    if model.members:
        extra["members"] = [cpu_state(m) for m in model.members]
    if model.text_top is not None:
        extra["text_top_state"] = {k: v.half() for k, v in cpu_state(model.text_top).items()}
    save_checkpoint(path, model.fusion, extra)


def load_sentiment_model(
    path: Path | str, map_location: str | torch.device = "cpu", text_encoder: Any | None = None
) -> tuple[SentimentModel, dict[str, Any]]:
    """Rebuild the model; a checkpoint with a text top needs the TextEncoder it was cut from.

    The encoder's `top` (package weights) is overwritten with the trained state, so
    `text_encoder.encode` and the returned model agree.
    """
    fusion, extra = load_checkpoint(path, map_location=map_location)
    members = [
        fusion_from_state(fusion.config, state, path).to(map_location).eval()
        for state in extra.pop("members", [])
    ]
    top_state = extra.pop("text_top_state", None)
    text_top = None
    if top_state is not None:
        if text_encoder is None:
            raise ValueError(f"{path} holds trained text layers: pass the TextEncoder to load it")
        text_encoder.top.load_state_dict({k: v.float() for k, v in top_state.items()})
        text_top = text_encoder.top.to(map_location)
    model = SentimentModel(fusion, text_top, members).eval()
    return model, extra
