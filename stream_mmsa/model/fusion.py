"""The fusion network: a ProMMA-style prompt model with evaluation before imagination.

Flow for one batch (every step batched over samples, modalities and pairs):

1. encode   per-modality linear projection to d, layer norm, sinusoidal positions;
            missing modalities and masked elements are replaced by zeros *before* the
            projection, so whatever they hold can never reach the output. The recalled
            text (a live session's latest earlier words) goes through the text encoder.
2. evaluate before anything is generated, the evaluator scores, for every missing
            modality, whether imagining it pays, from the available features, the recalled
            text and the quality signals; the gate imagines m iff gain > τ[pattern, m],
            one threshold per availability pattern and modality (evaluator.py).
3. imagine  only what the gate chose: imagined text is the recalled text where there is
            one; everything else comes from the generators, which run on the samples
            that need them only (imagination.py).
4. streams  per modality: [null, private prompt, missing-type prompt, real tokens,
            imagined tokens]; a modality neither present nor imagined keeps only the
            prefix and is "skipped": its stream weight is 0.
5. cross    six ordered-pair cross-modal blocks in one grouped call; the two updates a
            target receives are mixed by a softmax over their MI estimates.
6. self     a self-attention stack per target; the shared prompt is added back to the
            prompt slots between layers with a learned α_k (multi-level connection).
7. readout  masked mean over data tokens; softmax stream weights from the MI estimates
            plus learned per-modality and imagined-stream biases (skipped streams get 0);
            residual MLP head -> score in [-3, 3]; a Laplace scale head -> confidence.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LossWeights, ModelConfig
from .evaluator import EvaluatorInputs, MissingModalityEvaluator
from .imagination import Imagination
from .layers import GroupedBlock, Positions, additive_mask, masked_mean, masked_softmax
from .losses import compute_training_losses
from .prompts import N_PATTERNS, PromptBank, pattern_index
from .types import MODALITIES, QUALITY_SIGNALS, FusionOutput, MultimodalBatch
from .weighting import PAIR_SOURCE, PAIR_TARGET, StreamWeighting

ImagineMode = Literal["gate", "always", "never"]
IMAGINE_MODES: tuple[str, ...] = ("gate", "always", "never")
SCORE_RANGE = 3.0


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
        # The shared prompt re-joins between self-attention layers: after the last one no
        # layer reads the prompt slots, so a level there could never reach the output.
        levels = cfg.self_layers - 1 if cfg.multilevel_prompts else 0
        self.prompts = PromptBank(d, cfg.prompt_len, levels) if cfg.use_prompts else None
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
        self.weighting = (
            StreamWeighting(d, cfg.critic_dim, cfg.mi_bank_size)
            if cfg.use_prompts and cfg.dynamic_weighting
            else None
        )
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
        # τ per (availability pattern, modality): whether imagining m pays depends on what
        # else is there, so one threshold per modality cannot serve every pattern.
        self.register_buffer("tau", torch.zeros(N_PATTERNS, m))
        self.register_buffer("pair_target", torch.tensor(PAIR_TARGET), persistent=False)
        self.register_buffer("pair_source", torch.tensor(PAIR_SOURCE), persistent=False)

    def forward(self, batch: MultimodalBatch, imagine: ImagineMode = "gate") -> FusionOutput:
        """Score a batch. imagine: "gate" (evaluator decides), "always" or "never" (ablations).

        For inference wrap the call in torch.inference_mode() and put the model in eval().
        In "never" mode the generators do not run; gains are still reported.
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
        present = batch.present.bool()
        tokens, valid, pooled, recall, recall_valid = self._encode(batch, present)
        pattern = pattern_index(present)
        inputs = self._inputs(batch, pooled, pattern)
        gain, imagined = self._decide(inputs, ~present, mode, imagine_mask)
        # Imagined text is the recalled text where the session has some: it becomes the
        # window's text (the prompts then see text as there); the rest is generated.
        recalled = imagined[:, 0] & recall_valid.any(1)
        as_text = F.pad(recalled[:, None], (0, 2))  # (B, 3): text only
        if bool(recalled.any()):
            text = torch.where(recalled[:, None, None], recall, tokens[0])
            tokens = torch.cat([text[None], tokens[1:]])
            valid = torch.cat(
                [torch.where(recalled[:, None], recall_valid, valid[0])[None], valid[1:]]
            )
            pattern = pattern_index(present | as_text)
        generated = imagined & ~as_text
        imagined_tokens = self._generate(tokens, valid, generated, generators)
        x, keep, data = self._streams(tokens, valid, imagined_tokens, generated, pattern)
        used = (present | imagined).T
        z, weights, cross_aux = self._cross_modal(x, keep, data, used, generated.T)
        streams = self._self_attend(z, keep, data)
        fused = (weights[..., None] * streams).sum(0)
        hidden = fused + self.head(fused)
        raw = self.score_out(hidden).squeeze(-1)
        if self.config.score_activation == "tanh":
            score = SCORE_RANGE * torch.tanh(raw / SCORE_RANGE)
        else:
            score = raw.clamp(-SCORE_RANGE, SCORE_RANGE)
        # Confidence = 1 / (1 + b), b the predicted expected |error| (a Laplace scale fitted
        # by NLL on detached features): 0.5 means "expect to be off by one sentiment point".
        flags = torch.cat([present, imagined], 1).to(hidden.dtype)
        scale = F.softplus(self.scale_head(torch.cat([hidden.detach(), flags], 1))).squeeze(-1)
        scale = scale + 1e-3
        aux: dict[str, Tensor] = {}
        if self.training:
            aux = {
                "pooled": pooled[:, :3],
                "fused": fused,
                "streams": streams.transpose(0, 1),
                "used": used.T,
                "scale": scale,
                **cross_aux,
            }
            if imagined_tokens is not None:
                aux["imagined_summary"] = imagined_tokens.mean(2).transpose(0, 1)
        return FusionOutput(
            score=score,
            confidence=1.0 / (1.0 + scale),
            weights=weights.T,
            gain=gain,
            imagined=imagined,
            aux=aux,
        )

    def evaluator_inputs(self, batch: MultimodalBatch) -> EvaluatorInputs:
        """What the evaluator reads for this batch (detached), without running the model."""
        present = batch.present.bool()
        pooled = self._encode(batch, present)[2]
        return self._inputs(batch, pooled, pattern_index(present))

    def _encode(
        self, batch: MultimodalBatch, present: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """-> tokens (3, B, T, d) with positions, valid (3, B, T), pooled (B, 4, d) without
        (the three modalities, then the recalled text), and the recalled text as text
        tokens (B, T, d) with positions and its valid (B, T)."""
        b = batch.batch_size
        if batch.recalled is None or batch.recalled_mask is None:
            recalled = batch.features["text"].new_zeros(b, 1, batch.features["text"].shape[2])
            recalled_valid = torch.zeros(b, 1, dtype=torch.bool, device=recalled.device)
        else:
            recalled, recalled_valid = batch.recalled, batch.recalled_mask.bool()
        inputs = [
            (self.encoders[j], batch.features[k], batch.masks[k].bool() & present[:, j : j + 1])
            for j, k in enumerate(MODALITIES)
        ] + [(self.encoders[0], recalled, recalled_valid)]
        length = max(x.shape[1] for _, x, _ in inputs)
        encoded, valids = [], []
        for encoder, x, valid in inputs:
            e = encoder(torch.where(valid[..., None], x, 0.0))
            pad = length - e.shape[1]
            if pad:
                e = F.pad(e, (0, 0, 0, pad))
                valid = F.pad(valid, (0, pad))
            encoded.append(e)
            valids.append(valid)
        e = F.layer_norm(torch.stack(encoded), (self.config.d_model,))
        gain, bias = self.encoder_gain, self.encoder_bias
        e = e * torch.cat([gain, gain[:1]]) + torch.cat([bias, bias[:1]])
        valid = torch.stack(valids)
        pooled = masked_mean(e, valid).transpose(0, 1)
        e = e + self.positions(length)
        return e[:3], valid[:3], pooled, e[3], valid[3]

    def _inputs(self, batch: MultimodalBatch, pooled: Tensor, pattern: Tensor) -> EvaluatorInputs:
        """Detached: the evaluator is trained apart and must not bend what it judges."""
        quality = batch.quality
        if quality is None:
            quality = pooled.new_zeros(batch.batch_size, len(QUALITY_SIGNALS))
        pooled = pooled.detach()
        return EvaluatorInputs(pooled[:, :3], pooled[:, 3], quality.to(pooled), pattern)

    def _decide(
        self,
        inputs: EvaluatorInputs,
        missing: Tensor,
        mode: ImagineMode,
        imagine_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """-> gain (B, 3) (0 where present), imagined (B, 3) bool: judged before generating.

        The evaluator runs only when some sample lacks a modality, so complete batches pay
        nothing for it.
        """
        gain = inputs.available.new_zeros(missing.shape)
        if bool(missing.any()):
            gain = self.evaluator(inputs).masked_fill(~missing, 0.0)
        if imagine_mask is not None:
            imagined = missing & imagine_mask.bool()
        elif mode == "always":
            imagined = missing
        elif mode == "gate":
            imagined = missing & (gain > self.tau[inputs.pattern])
        else:
            imagined = torch.zeros_like(missing)
        return gain, imagined

    def _generate(
        self, tokens: Tensor, valid: Tensor, generated: Tensor, every: bool
    ) -> Tensor | None:
        """Imagined tokens (3, B, L, d), computed only for samples with something to generate
        (all of them with every=True: reconstruction targets); None when none has."""
        rows = generated.any(1)
        if every:
            rows = torch.ones_like(rows)
        if not bool(rows.any()):
            return None
        if bool(rows.all()):
            return self.imagination(tokens, valid)
        index = rows.nonzero().flatten()
        part = self.imagination(tokens[:, index], valid[:, index])
        out = part.new_zeros(part.shape[0], rows.shape[0], *part.shape[2:])
        return out.index_copy(1, index, part)

    def _streams(
        self,
        tokens: Tensor,
        valid: Tensor,
        imagined_tokens: Tensor | None,
        generated: Tensor,
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
        if imagined_tokens is not None and bool(generated.any()):
            flag = generated.T[..., None].expand(-1, -1, imagined_tokens.shape[2])
            parts.append(imagined_tokens)
            keep.append(flag)
            data.append(flag)
        return torch.cat(parts, 2), torch.cat(keep, 2), torch.cat(data, 2)

    def _cross_modal(
        self, x: Tensor, keep: Tensor, data: Tensor, used: Tensor, imagined: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Six ordered-pair blocks in one grouped call; -> z (3, B, L, d), weights (3, B).

        A target's stream receives its two sources' updates mixed by the MI softmax; an
        unused source (skipped) contributes nothing. used/imagined are (3, B).
        """
        m, b = used.shape
        xt = x.index_select(0, self.pair_target)
        normed = F.layer_norm(x, (self.config.d_model,))
        context = normed.index_select(0, self.pair_source)
        pair_mask = additive_mask(keep.index_select(0, self.pair_source), x.dtype)
        y = self.cross[0](xt, pair_mask, context, normed.index_select(0, self.pair_target))
        for block in self.cross[1:]:
            y = block(y, pair_mask, context)
        delta = y - xt
        target_pool = masked_mean(x, data)
        pair_pool = masked_mean(delta, data.index_select(0, self.pair_target))
        pair_ok = used.index_select(0, self.pair_target) & used.index_select(0, self.pair_source)
        if self.weighting is not None:
            mix, weights = self.weighting(pair_pool, target_pool, pair_ok, used, imagined)
        else:
            mix = masked_softmax(x.new_zeros(m, 2, b), pair_ok.view(m, 2, b), dim=1)
            weights = masked_softmax(x.new_zeros(m, b), used, dim=0)
        z = x + (delta.view(m, 2, *delta.shape[1:]) * mix[..., None, None]).sum(1)
        aux = {"target_pool": target_pool, "pair_pool": pair_pool, "pair_ok": pair_ok}
        return z, weights, aux

    def _self_attend(self, z: Tensor, keep: Tensor, data: Tensor) -> Tensor:
        """Self-attention per target, the shared prompt re-joined between layers;
        -> pooled, normalised streams (3, B, d)."""
        cfg = self.config
        mask = additive_mask(keep, z.dtype)
        alpha = None if self.prompts is None else self.prompts.alpha
        if alpha is not None:
            slot = F.pad(self.prompts.shared, (0, 0, 1, z.shape[2] - 1 - cfg.prompt_len))
        for k, block in enumerate(self.selfs):
            z = block(z, mask)
            if alpha is not None and k < len(alpha):
                z = z + alpha[k] * slot
        streams = F.layer_norm(masked_mean(z, data), (cfg.d_model,))
        return streams * self.stream_gain + self.stream_bias

    def training_losses(
        self,
        complete: MultimodalBatch,
        missing: MultimodalBatch,
        weights: LossWeights,
        distill: bool,
    ) -> dict[str, Tensor]:
        """All training loss terms and their weighted "total" (see losses.py)."""
        return compute_training_losses(self, complete, missing, weights, distill)
