"""The fusion network: a ProMMA-style prompt model with evaluation before imagination.

Flow for one batch (every step batched over samples, modalities and pairs):

1. encode   per-modality linear projection to d, layer norm, sinusoidal positions;
            missing modalities and masked elements are replaced by zeros *before* the
            projection, so whatever they hold can never reach the output.
2. imagine  generators produce each modality from the available others (imagination.py).
3. evaluate the evaluator predicts, for every missing modality, the gain of imagining it;
            the gate imagines m iff gain > τ_m (evaluator.py).
4. streams  per modality: [null, private prompt, missing-type prompt, real tokens,
            imagined tokens]; a modality neither present nor imagined keeps only the
            prefix and is "skipped": its stream weight is 0.
5. cross    six ordered-pair cross-modal blocks in one grouped call; the two updates a
            target receives are mixed by a softmax over their MI estimates.
6. self     a self-attention stack per target; the shared prompt is added back to the
            prompt slots after every layer with a learned α_k (multi-level connection).
7. readout  masked mean over data tokens, MI-based softmax weights over the streams,
            residual MLP head -> score in [-3, 3], a Laplace scale head -> confidence.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LossWeights, ModelConfig
from .evaluator import MissingModalityEvaluator
from .imagination import Imagination
from .layers import GroupedBlock, Positions, additive_mask, masked_mean, masked_softmax
from .losses import compute_training_losses
from .prompts import PromptBank, pattern_index
from .types import MODALITIES, FusionOutput, MultimodalBatch
from .weighting import MICritic

ImagineMode = Literal["gate", "always", "never"]
IMAGINE_MODES: tuple[str, ...] = ("gate", "always", "never")
SCORE_RANGE = 3.0
PAIR_TARGET = (0, 0, 1, 1, 2, 2)
PAIR_SOURCE = (1, 2, 0, 2, 0, 1)
"""The six ordered pairs (target <- source), grouped by target so pairs view as (3, 2)."""


class FusionModel(nn.Module):
    """Multimodal sentiment fusion with prompts, imagination and a missing-modality evaluator."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        d, m, ff = cfg.d_model, len(MODALITIES), cfg.d_model * cfg.ff_mult
        self.encoders = nn.ModuleList(nn.Linear(cfg.input_dims[k], d) for k in MODALITIES)
        # Per-modality layer-norm affine; its bias doubles as the modality embedding.
        self.encoder_gain = nn.Parameter(torch.ones(m, 1, 1, d))
        self.encoder_bias = nn.Parameter(torch.randn(m, 1, 1, d) * 0.1)
        self.positions = Positions(d)
        self.null = nn.Parameter(torch.randn(m, 1, d) * 0.1)
        self.prompts = PromptBank(d, cfg.prompt_len, cfg.self_layers) if cfg.use_prompts else None
        self.imagination = Imagination(d, cfg.heads, cfg.imagine_len, ff, cfg.dropout)
        self.evaluator = MissingModalityEvaluator(d, cfg.evaluator_hidden)
        self.cross = nn.ModuleList(
            GroupedBlock(len(PAIR_TARGET), d, cfg.heads, ff, cfg.dropout, cross=True)
            for _ in range(cfg.cross_layers)
        )
        self.selfs = nn.ModuleList(
            GroupedBlock(m, d, cfg.heads, ff, cfg.dropout, cross=False)
            for _ in range(cfg.self_layers)
        )
        self.critic = MICritic(len(PAIR_TARGET), d, cfg.critic_dim) if self.uses_mi else None
        self.weight_scale = nn.Parameter(torch.ones(()))
        self.weight_bias = nn.Parameter(torch.zeros(m, 1))
        self.stream_gain = nn.Parameter(torch.ones(m, 1, d))
        self.stream_bias = nn.Parameter(torch.zeros(m, 1, d))
        self.head = nn.Sequential(
            nn.LayerNorm(d),
            nn.Linear(d, 2 * d),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * d, d),
        )
        self.score_out = nn.Linear(d, 1)
        self.scale_head = nn.Sequential(nn.Linear(d + 2 * m, d), nn.GELU(), nn.Linear(d, 1))
        self.rnc_proj = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.register_buffer("tau", torch.zeros(m))
        self.register_buffer("mi_bank", torch.zeros(m, cfg.mi_bank_size, d))
        self.register_buffer("pair_target", torch.tensor(PAIR_TARGET), persistent=False)
        self.register_buffer("pair_source", torch.tensor(PAIR_SOURCE), persistent=False)

    @property
    def uses_mi(self) -> bool:
        """Whether stream weights come from the MI critic (else uniform over used streams)."""
        return self.config.use_prompts and self.config.dynamic_weighting

    def forward(self, batch: MultimodalBatch, imagine: ImagineMode = "gate") -> FusionOutput:
        """Score a batch. imagine: "gate" (evaluator decides), "always" or "never" (ablations).

        For inference wrap the call in torch.inference_mode() and put the model in eval().
        In "never" mode the generators and evaluator do not run and every gain is 0.
        """
        if imagine not in IMAGINE_MODES:
            raise ValueError(f"imagine must be one of {IMAGINE_MODES}, got {imagine!r}")
        return self.run(batch, imagine)

    def run(
        self,
        batch: MultimodalBatch,
        mode: ImagineMode = "gate",
        imagine_mask: Tensor | None = None,
        generators: bool = False,
    ) -> FusionOutput:
        """forward() with the knobs training and calibration need.

        imagine_mask (B, 3) bool overrides the decision: imagine missing m iff it is True.
        generators=True runs the generators even when nothing is missing (reconstruction
        targets of the complete flow). aux is filled in training mode only.
        """
        cfg = self.config
        present = batch.present.bool()
        missing = ~present
        b, m = present.shape
        tokens, valid, pooled = self._encode(batch, present)
        pattern = pattern_index(present)
        any_missing = bool(missing.any())
        wants_imagination = imagine_mask is not None or mode != "never"
        imagined_tokens = summary = None
        gain = tokens.new_zeros(b, m)
        if generators or (any_missing and wants_imagination):
            imagined_tokens = self.imagination(tokens, valid)
            summary = imagined_tokens.mean(2).transpose(0, 1)
            if any_missing:
                gain = self.evaluator(pooled.detach(), summary.detach(), pattern)
                gain = gain.masked_fill(present, 0.0)
        if imagine_mask is not None:
            imagined = missing & imagine_mask.bool()
        elif mode == "always":
            imagined = missing
        elif mode == "gate":
            imagined = missing & (gain > self.tau)
        else:
            imagined = torch.zeros_like(missing)

        x, keep, data = self._streams(tokens, valid, imagined_tokens, imagined, pattern)
        used = present | imagined
        used_t = used.T
        target_pool = masked_mean(x, data)

        # Cross-modal attention for the six ordered pairs at once.
        xt = x.index_select(0, self.pair_target)
        context = F.layer_norm(x, (cfg.d_model,)).index_select(0, self.pair_source)
        pair_mask = additive_mask(keep.index_select(0, self.pair_source), x.dtype)
        y = xt
        for block in self.cross:
            y = block(y, pair_mask, context)
        delta = y - xt
        pair_pool = masked_mean(delta, data.index_select(0, self.pair_target))
        pair_ok = used_t.index_select(0, self.pair_target) & used_t.index_select(
            0, self.pair_source
        )
        if self.critic is not None:
            with torch.no_grad():
                pmi = self.critic.pmi(
                    pair_pool,
                    target_pool.index_select(0, self.pair_target),
                    self.mi_bank.index_select(0, self.pair_target),
                )
            pair_logits = self.weight_scale * pmi.view(m, 2, b)
        else:
            pmi = pair_logits = x.new_zeros(m, 2, b)
        mix = masked_softmax(pair_logits, pair_ok.view(m, 2, b), dim=1)
        z = x + (delta.view(m, 2, *delta.shape[1:]) * mix[..., None, None]).sum(1)
        if self.critic is not None:
            stream_logits = self.weight_scale * (mix * pmi.view(m, 2, b)).sum(1) + self.weight_bias
        else:
            stream_logits = x.new_zeros(m, b)
        weights = masked_softmax(stream_logits, used_t, dim=0)  # (3, B)

        # Self-attention per target, with the shared prompt re-joined after every layer.
        self_mask = additive_mask(keep, x.dtype)
        slot = None
        if self.prompts is not None and cfg.multilevel_prompts:
            slot = F.pad(self.prompts.shared, (0, 0, 1, x.shape[2] - 1 - cfg.prompt_len))
        for k, block in enumerate(self.selfs):
            z = block(z, self_mask)
            if slot is not None:
                z = z + self.prompts.alpha[k] * slot

        streams = F.layer_norm(masked_mean(z, data), (cfg.d_model,))
        streams = streams * self.stream_gain + self.stream_bias  # (3, B, d)
        fused = (weights[..., None] * streams).sum(0)
        hidden = fused + self.head(fused)
        raw = self.score_out(hidden).squeeze(-1)
        if cfg.score_activation == "tanh":
            score = SCORE_RANGE * torch.tanh(raw / SCORE_RANGE)
        else:
            score = raw.clamp(-SCORE_RANGE, SCORE_RANGE)
        flags = torch.cat([present, imagined], 1).to(hidden.dtype)
        scale = F.softplus(self.scale_head(torch.cat([hidden.detach(), flags], 1))).squeeze(-1)
        scale = scale + 1e-3
        aux: dict[str, Tensor] = {}
        if self.training:
            aux = {
                "pooled": pooled,
                "fused": fused,
                "streams": streams.transpose(0, 1),
                "target_pool": target_pool,
                "pair_pool": pair_pool,
                "pair_ok": pair_ok,
                "used": used,
                "scale": scale,
            }
            if summary is not None:
                aux["imagined_summary"] = summary
        return FusionOutput(
            score=score,
            confidence=1.0 / (1.0 + scale),
            weights=weights.T,
            gain=gain,
            imagined=imagined,
            aux=aux,
        )

    def _encode(self, batch: MultimodalBatch, present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> tokens (3, B, T, d) with positions, valid (3, B, T), pooled (B, 3, d) without."""
        length = max(batch.features[k].shape[1] for k in MODALITIES)
        encoded, valids = [], []
        for j, k in enumerate(MODALITIES):
            valid = batch.masks[k].bool() & present[:, j : j + 1]
            e = self.encoders[j](torch.where(valid[..., None], batch.features[k], 0.0))
            pad = length - e.shape[1]
            if pad:
                e = F.pad(e, (0, 0, 0, pad))
                valid = F.pad(valid, (0, pad))
            encoded.append(e)
            valids.append(valid)
        e = torch.stack(encoded)
        valid = torch.stack(valids)
        e = F.layer_norm(e, (self.config.d_model,)) * self.encoder_gain + self.encoder_bias
        pooled = masked_mean(e, valid).transpose(0, 1)
        return e + self.positions(length), valid, pooled

    def _streams(
        self,
        tokens: Tensor,
        valid: Tensor,
        imagined_tokens: Tensor | None,
        imagined: Tensor,
        pattern: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """-> x (3, B, L, d), keep (3, B, L) attendable, data (3, B, L) pooled tokens."""
        m, b = tokens.shape[:2]
        if self.prompts is not None:
            fixed = torch.cat([self.null, self.prompts.private()], 1)
            by_pattern = self.prompts.missing_type[pattern].transpose(0, 1)
            prefix = torch.cat([fixed.unsqueeze(1).expand(-1, b, -1, -1), by_pattern], 2)
        else:
            prefix = self.null.unsqueeze(1).expand(-1, b, -1, -1)
        n_prefix = prefix.shape[2]
        parts = [prefix, tokens]
        keep = [valid.new_ones(m, b, n_prefix), valid]
        data = [valid.new_zeros(m, b, n_prefix), valid]
        if imagined_tokens is not None and bool(imagined.any()):
            flag = imagined.T[..., None].expand(-1, -1, imagined_tokens.shape[2])
            parts.append(imagined_tokens)
            keep.append(flag)
            data.append(flag)
        return torch.cat(parts, 2), torch.cat(keep, 2), torch.cat(data, 2)

    @torch.no_grad()
    def update_mi_bank(self, target_pool: Tensor, used: Tensor) -> None:
        """Push the newest used target summaries (3, B, d) into the MI reference bank."""
        size = self.mi_bank.shape[1]
        for j in range(len(MODALITIES)):
            rows = target_pool[j][used[:, j]].detach()[-size:]
            if rows.numel():
                self.mi_bank[j] = torch.cat([rows, self.mi_bank[j]])[:size]

    def training_losses(
        self,
        complete: MultimodalBatch,
        missing: MultimodalBatch,
        weights: LossWeights,
        distill: bool,
    ) -> dict[str, Tensor]:
        """All training loss terms and their weighted "total" (see losses.py)."""
        return compute_training_losses(self, complete, missing, weights, distill)
