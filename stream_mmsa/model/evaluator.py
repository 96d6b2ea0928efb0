"""The missing-modality evaluator: judge first, then generate only what pays.

For every sample and every missing modality m the evaluator scores whether imagining m
beats adapting without it. It runs *before* any generator, on what is already there:
pooled features of the available modalities, the availability pattern, a summary of the
recalled text (a live session's most recent earlier words, what late text is imagined
from) and the quality signals (`QUALITY_SIGNALS`). The model imagines m iff its score
exceeds τ[p, m], a threshold per availability pattern p and modality m.

The evaluator is trained apart from the backbone (`fit_evaluator`): on held-out samples
(data the frozen backbone was not fitted on), every combination of imagined modalities
is scored once, and the evaluator learns the decision itself, by minimising the expected
error of its gated mixture, not by regressing noisy per-sample error differences. Its
score is therefore a log-odds that imagining lowers the error (> 0: imagine).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .prompts import N_PATTERNS, pattern_index
from .types import MODALITIES, QUALITY_SIGNALS, MultimodalBatch

if TYPE_CHECKING:
    from .fusion import FusionModel

SUBSETS = torch.tensor([[(s >> j) & 1 for j in range(3)] for s in range(8)], dtype=torch.bool)
"""(8, 3): every combination of imagined modalities; row s imagines modality j iff bit j."""


def subset_index(imagined: Tensor) -> Tensor:
    """(N, 3) bool imagined modalities -> (N,) their row of SUBSETS."""
    return (imagined.long() * torch.tensor([1, 2, 4], device=imagined.device)).sum(-1)


@dataclass
class EvaluatorInputs:
    """What the evaluator reads, all known before any generator runs (detached).

    available (B, 3, d) pooled real features (0 where missing); recalled (B, d) pooled
    recalled text (0 when none); quality (B, Q); pattern (B,) availability index.
    """

    available: Tensor
    recalled: Tensor
    quality: Tensor
    pattern: Tensor

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The fields in order (asdict would deep-copy every tensor)."""
        return self.available, self.recalled, self.quality, self.pattern

    def rows(self, index: Tensor) -> EvaluatorInputs:
        return EvaluatorInputs(*(x[index] for x in self.tensors()))


class MissingModalityEvaluator(nn.Module):
    """Scores for the three modalities at once: a small network on the quality signals and
    the availability pattern, plus a linear read of the feature summaries.

    The capacity is deliberate. It learns from held-out samples, which are few, and a
    wide network memorises which of them imagining happened to help (the per-sample gain
    is mostly label noise); a linear read of the summaries cannot, so the rule has to come
    from the signals that generalise.
    """

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        m = len(MODALITIES)
        self.rule = nn.Sequential(
            nn.Linear(len(QUALITY_SIGNALS) + N_PATTERNS, hidden), nn.GELU(), nn.Linear(hidden, m)
        )
        self.available = nn.Linear(m * d, m)
        self.recalled = nn.Linear(d, m)

    def forward(self, x: EvaluatorInputs) -> Tensor:
        """-> (B, 3) log-odds that imagining each modality lowers the error."""
        pattern = F.one_hot(x.pattern.long(), N_PATTERNS).to(x.quality)
        return (
            self.rule(torch.cat([x.quality, pattern], 1))
            + self.available(x.available.flatten(1))
            + self.recalled(x.recalled)
        )


@dataclass
class ThresholdCalibration:
    """Outcome of `search_thresholds`: τ (pattern, modality) and the held-out MAE it buys.

    per_pattern maps each calibrated pattern index to its validation MAE under τ = 0,
    always, never and the calibrated row, and its sample count.
    """

    tau: list[list[float]]
    mae_at_zero: float
    mae_calibrated: float
    samples: int
    per_pattern: dict[int, dict[str, float]]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _abs_errors(pred: Tensor, label: Tensor, gain: Tensor, missing: Tensor, tau: Tensor) -> Tensor:
    """(N,) |error| when each missing m is imagined iff gain > τ_m; pred (N, 8) per subset."""
    chosen = pred.gather(1, subset_index(missing & (gain > tau))[:, None]).squeeze(1)
    return (chosen - label).abs().double()


def _standard_error(diff: Tensor, groups: Tensor) -> float:
    """Standard error of diff's mean, counted over groups (clustered): the windows of one
    utterance share its label, so they are not independent evidence. One group per
    sample gives the usual std / sqrt(n); fewer than two groups give 0 (no estimate)."""
    _, index = groups.unique(return_inverse=True)
    g = int(index.max()) + 1 if index.numel() else 0
    if g < 2:
        return 0.0
    sums = torch.zeros(g, dtype=diff.dtype).index_add_(0, index, diff - diff.mean())
    return math.sqrt(g / (g - 1) * float((sums**2).sum())) / diff.numel()


Uniform = Literal["always", "never"]


def _uniform_tau(cols: Tensor, policy: Uniform) -> Tensor:
    """τ row (3,) imagining the missing modalities `cols` always (−inf) or never (+inf)."""
    return torch.where(cols, -math.inf if policy == "always" else math.inf, 0.0)


def _calibrate_pattern(
    pred: Tensor,
    label: Tensor,
    gain: Tensor,
    missing: Tensor,
    groups: Tensor,
    levels: Tensor,
    rounds: int,
    min_z: float,
) -> tuple[Tensor, dict[str, float], Uniform]:
    """τ row (3,) for samples sharing one availability pattern, its mean |errors|, and the
    uniform policy it started from.

    Starts from always imagine (−inf), the generation path the backbone is trained for;
    never (+inf) replaces it, and then any other τ_m (±inf, 0 or a quantile of the
    predicted gains) replaces the incumbent, only by a paired improvement of at least
    min_z standard errors, counted over `groups` (`_standard_error`): when the evidence is
    thin, a policy that wins on validation by chance would only add noise on new data.
    Choosing between always and never is such a choice too: on the five videos of half of
    spoken MOSI valid, never can win by 0.04 MAE and then lose by 0.18 on the other five.
    """
    cols = missing.any(0)
    policies = {
        "zero": torch.zeros(3),
        "always": _uniform_tau(cols, "always"),
        "never": _uniform_tau(cols, "never"),
    }
    errors = {k: _abs_errors(pred, label, gain, missing, t) for k, t in policies.items()}

    def wins(err: Tensor, over: Tensor) -> bool:
        mean = float((over - err).mean())
        return mean > 1e-9 and mean >= min_z * _standard_error(over - err, groups)

    uniform: Uniform = "never" if wins(errors["never"], errors["always"]) else "always"
    tau, best = policies[uniform].clone(), errors[uniform]
    for _ in range(rounds):
        improved = False
        for j in torch.nonzero(cols).flatten().tolist():
            for value in [-math.inf, math.inf, 0.0, *gain[:, j].quantile(levels).tolist()]:
                trial = tau.clone()
                trial[j] = value
                err = _abs_errors(pred, label, gain, missing, trial)
                if wins(err, best):
                    best, tau, improved = err, trial, True
        if not improved:
            break
    means = {k: float(v.mean()) for k, v in errors.items()}
    return tau, {**means, "calibrated": float(best.mean())}, uniform


CV_MIN_Z = 1.0
"""How many standard errors the cross-validated search must beat the uniform policy by:
the one-standard-error rule of cross-validated selection (Breiman et al., CART, 1984).
With no signal a search still beats it on the held-out folds about half the time."""


def _cross_validated(
    pred: Tensor,
    label: Tensor,
    gain: Tensor,
    missing: Tensor,
    groups: Tensor,
    folds: Tensor,
    levels: Tensor,
    rounds: int,
    min_z: float,
) -> Tensor:
    """(N,) |error| of `_calibrate_pattern`'s τ (guarded by min_z) on each fold when
    searched on the others: what the search is worth on samples it did not pick its
    threshold on. One fold alone: no held-out search, +inf."""
    errors = torch.full((label.numel(),), math.inf, dtype=torch.float64)
    for k in folds.unique().tolist():
        out = folds == k
        if bool(out.all()):
            break
        rest = (pred[~out], label[~out], gain[~out], missing[~out], groups[~out])
        tau, _, _ = _calibrate_pattern(*rest, levels, rounds, min_z)
        errors[out] = _abs_errors(pred[out], label[out], gain[out], missing[out], tau)
    return errors


@dataclass
class Decisions:
    """Held-out samples scored under every decision: what the evaluator is fitted and judged on.

    pred (N, 8) score per imagined subset (row s of SUBSETS), label (N,), teacher (N,) the
    complete flow's score (the pseudo label), missing (N, 3) bool, ids (N,) sample ids.
    """

    inputs: EvaluatorInputs
    pred: Tensor
    label: Tensor
    teacher: Tensor
    missing: Tensor
    ids: list[str]

    def rows(self, index: Tensor) -> Decisions:
        keep = index.tolist() if index.dtype != torch.bool else index.nonzero().flatten().tolist()
        return Decisions(
            self.inputs.rows(index),
            self.pred[index],
            self.label[index],
            self.teacher[index],
            self.missing[index],
            [self.ids[i] for i in keep],
        )

    def errors(self, imagined: Tensor) -> Tensor:
        """(N,) |error| when exactly the modalities in imagined (N, 3) are imagined."""
        chosen = self.pred.gather(1, subset_index(imagined & self.missing)[:, None]).squeeze(1)
        return (chosen - self.label).abs()

    def _group_names(self) -> list[str]:
        return [i.split("#", 1)[0] for i in self.ids]

    def groups(self, key: Callable[[str], str] | None = None) -> Tensor:
        """(N,) group index per sample: what its id names before "#" (one utterance's
        windows), so near-duplicate windows count as one piece of evidence; or what `key`
        names from the id, for coarser evidence units."""
        names = self._group_names() if key is None else [key(i) for i in self.ids]
        index = {name: k for k, name in enumerate(dict.fromkeys(names))}
        return torch.tensor([index[name] for name in names], dtype=torch.long)

    def stop_split(self, seed: int, share: float = 0.2) -> tuple[Tensor, Tensor]:
        """(train, stop) bool masks: a seeded `share` of the groups held out for early
        stopping. A group is what an id names before "#" (one utterance's windows), so
        near-duplicate windows never sit on both sides and hide overfitting."""
        names = self._group_names()
        groups = sorted(set(names))
        order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed))
        held = {groups[i] for i in order[: max(1, round(share * len(groups)))].tolist()}
        stop = torch.tensor([name in held for name in names])
        return ~stop, stop

    def oracle(self) -> Tensor:
        """(N,) |error| of the best decision per sample: the ceiling any gate can reach."""
        allowed = ~(SUBSETS[None] & ~self.missing[:, None, :]).any(-1)
        error = (self.pred - self.label[:, None]).abs()
        return error.masked_fill(~allowed, math.inf).min(1).values


def _cat_decisions(parts: list[Decisions]) -> Decisions:
    columns = zip(*(p.inputs.tensors() for p in parts), strict=True)
    inputs = EvaluatorInputs(*(torch.cat(x) for x in columns))
    return Decisions(
        inputs,
        torch.cat([p.pred for p in parts]),
        torch.cat([p.label for p in parts]),
        torch.cat([p.teacher for p in parts]),
        torch.cat([p.missing for p in parts]),
        [i for p in parts for i in p.ids],
    )


@torch.inference_mode()
def score_decisions(
    model: FusionModel,
    pairs: Iterable[tuple[MultimodalBatch, MultimodalBatch]],
    members: Sequence[FusionModel] = (),
) -> Decisions:
    """Score (complete, missing) batch pairs of the same labelled samples under all 8
    decisions. Batches must already be in the fusion model's input space (text top applied).

    With `members` (a seed ensemble whose first model is `model`), scores are the models'
    average, as the ensemble serves them; the evaluator's inputs are `model`'s, the one
    that decides for all.
    """
    fusions = [model, *members]
    was_training = [f.training for f in fusions]
    for f in fusions:
        f.eval()
    device = model.tau.device
    parts = []
    for complete, missing in pairs:
        if complete.labels is None:
            raise ValueError("score_decisions needs labelled batches")
        complete, missing = complete.to(device), missing.to(device)
        n = missing.batch_size
        teacher = torch.stack([f(complete, imagine="never").score for f in fusions]).mean(0)
        masks = SUBSETS.to(device).repeat_interleave(n, 0)
        repeated = repeat_batch(missing, 8)
        scores = [f.run(repeated, imagine_mask=masks).score for f in fusions]
        pred = torch.stack(scores).mean(0).view(8, n).T
        inputs = model.evaluator_inputs(missing)
        parts.append(
            Decisions(
                EvaluatorInputs(*(x.cpu() for x in inputs.tensors())),
                pred.float().cpu(),
                complete.labels.float().cpu(),
                teacher.float().cpu(),
                (~missing.present.bool()).cpu(),
                list(missing.ids or [""] * n),
            )
        )
    for f, mode in zip(fusions, was_training, strict=True):
        f.train(mode)
    if not parts:
        raise ValueError("score_decisions got no batches")
    return _cat_decisions(parts)


def expected_error(gain: Tensor, error: Tensor, missing: Tensor) -> Tensor:
    """(N,) error of the gated mixture: Σ_s P(s) |ŷ_s − y*| with P(imagine m) = σ(gain_m)
    for missing m and 0 for present m. error (N, 8) per subset of SUBSETS."""
    p = torch.sigmoid(gain) * missing
    bits = SUBSETS.to(p)
    probs = (bits * p[:, None, :] + (1 - bits) * (1 - p[:, None, :])).prod(-1)
    return (probs * error).sum(1)


def regret_loss(gain: Tensor, error: Tensor, missing: Tensor) -> Tensor:
    """Cost-sensitive decision loss: per missing modality m, a logistic loss toward "imagining
    m alone beats imagining nothing", weighted by how much it does or does not.

    Its minimiser imagines m where the expected gain is positive, like the expected error
    of the gated mixture, but with curvature: the logits stay finite and training settles.
    error (N, 8) per subset of SUBSETS.
    """
    realised = error[:, :1] - error[:, [1, 2, 4]]
    weight = realised.abs() * missing
    target = (realised > 0).to(gain.dtype)
    losses = F.binary_cross_entropy_with_logits(gain, target, reduction="none")
    return (losses * weight).sum() / weight.sum().clamp_min(1e-9)


Target = Literal["label", "teacher"]
FEATURE_DECAY = 10.0
"""Weight decay of the evaluator's linear read of the feature summaries: it keeps a weight
only where the held-out samples push for it consistently (see MissingModalityEvaluator)."""


@dataclass
class EvaluatorFit:
    """Outcome of `fit_evaluator`: the target it learned, its loss and the τ it chose."""

    target: str
    samples: int
    steps: int
    expected_error_start: float
    expected_error_end: float
    calibration: ThresholdCalibration


def fit_evaluator(
    model: FusionModel,
    data: Decisions,
    target: Target = "label",
    steps: int = 600,
    lr: float = 3e-3,
    seed: int = 0,
    min_z: float = 2.0,
    folds: int = 3,
    groups: Tensor | None = None,
) -> EvaluatorFit:
    """Train a fresh evaluator on held-out `data` scored by the frozen `model`, then its τ.

    The loss is the decision's own (`regret_loss`: per-sample regrets against y*, the
    label or the complete flow's prediction with target="teacher"), on every sample for a
    fixed budget of `steps`; what keeps it from memorising is its capacity and the decay
    of its feature read (`MissingModalityEvaluator`, `FEATURE_DECAY`). Its output layers
    start at zero: a score of 0 is "no evidence either way", so every step moves it from
    indifference rather than from a random rule.

    τ per pattern then comes from `search_thresholds` on the labels, never worse on `data`
    than always imagine (nor than never, where never wins by `min_z` standard errors), and
    on out-of-fold scores: each group's score from an evaluator fitted on the other
    `folds` − 1 parts. Scores of the samples an
    evaluator was fitted on agree with their realised gains by construction, so a
    threshold on them looks significant where the evaluator has learnt nothing. The
    search is cross-validated over the same folds: a pattern keeps a searched τ only if
    it also wins on the folds it was not searched on.

    `groups` (N,) says which samples are one piece of evidence, for the folds and the
    standard errors; by default `data.groups()`, one utterance's windows. Pass coarser ones
    where utterances share more than their label (a video's speaker, topic and the text one
    window recalls from another): out-of-fold scores are out of fold only if no group spans
    two folds.

    No early stopping: a held-out share of the groups is too few utterances to choose a
    step by (on spoken MOSI one half holds ~115, so 20 % is ~23), and the minimum of a
    noisy curve picks a checkpoint by chance, often one of the first, whose decisions are
    the initialisation's.
    """
    rows = data.missing.any(1)
    if not bool(rows.any()):
        raise ValueError("fit_evaluator needs samples with a missing modality")
    fit = data.rows(rows)
    y = fit.label if target == "label" else fit.teacher
    error = (fit.pred - y[:, None]).abs()
    old = model.evaluator
    shape = (old.recalled.in_features, old.rule[0].out_features)
    groups = (data.groups() if groups is None else groups)[rows].unique(return_inverse=True)[1]
    fresh = _train_evaluator(fit, error, shape, steps, lr, seed)
    with torch.no_grad():
        start = float(expected_error(torch.zeros_like(error[:, :3]), error, fit.missing).mean())
        gain = fresh(fit.inputs)
        end = float(expected_error(gain, error, fit.missing).mean())
    fold = None
    if folds > 1 and int(groups.max()) + 1 >= folds:
        order = torch.randperm(int(groups.max()) + 1, generator=torch.Generator().manual_seed(seed))
        fold = (order % folds)[groups]
        for k in range(folds):
            part = _train_evaluator(fit.rows(fold != k), error[fold != k], shape, steps, lr, seed)
            with torch.no_grad():
                gain[fold == k] = part(fit.inputs.rows(fold == k))
    old.load_state_dict(fresh.state_dict())
    tau = model.tau.detach().float().cpu()
    calibration = search_thresholds(
        fit.pred, fit.label, gain, fit.missing, tau, min_z=min_z, groups=groups, folds=fold
    )
    model.tau.copy_(torch.tensor(calibration.tau).to(model.tau))
    return EvaluatorFit(target, len(fit.label), steps, start, end, calibration)


def _train_evaluator(
    fit: Decisions, error: Tensor, shape: tuple[int, int], steps: int, lr: float, seed: int
) -> MissingModalityEvaluator:
    """A fresh evaluator (output layers at zero) trained on `fit` by `regret_loss`."""
    torch.manual_seed(seed)
    fresh = MissingModalityEvaluator(*shape)
    for layer in (fresh.rule[-1], fresh.available, fresh.recalled):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    optimizer = torch.optim.AdamW(
        [
            {"params": fresh.rule.parameters(), "weight_decay": 1e-3},
            {"params": [*fresh.available.parameters(), *fresh.recalled.parameters()]},
        ],
        lr=lr,
        weight_decay=FEATURE_DECAY,
    )
    fresh.train()
    for _ in range(steps):
        value = regret_loss(fresh(fit.inputs), error, fit.missing)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return fresh.eval()


@torch.no_grad()
def predicted_gain(model: FusionModel, data: Decisions) -> Tensor:
    """(N, 3) the model's evaluator scores on scored samples (0 where present)."""
    model.evaluator.eval()
    device = model.tau.device
    inputs = EvaluatorInputs(*(x.to(device) for x in data.inputs.tensors()))
    return model.evaluator(inputs).float().cpu().masked_fill(~data.missing, 0.0)


def gate_decisions(model: FusionModel, data: Decisions) -> Tensor:
    """(N, 3) bool: what the model's gate imagines on scored samples."""
    gain = predicted_gain(model, data)
    tau = model.tau.detach().float().cpu()[data.inputs.pattern.long()]
    return data.missing & (gain > tau)


def search_thresholds(
    pred: Tensor,
    label: Tensor,
    gain: Tensor,
    missing: Tensor,
    tau: Tensor,
    candidates: int = 41,
    rounds: int = 4,
    min_z: float = 2.0,
    groups: Tensor | None = None,
    folds: Tensor | None = None,
) -> ThresholdCalibration:
    """τ per availability pattern from scored samples (see `_calibrate_pattern`).

    pred (N, 8) score per imagined subset (bit j = modality j), label (N,), gain (N, 3),
    missing (N, 3) bool, tau (N_PATTERNS, 3) the current rows, kept for absent patterns;
    groups (N,) samples that are one piece of evidence (default: each sample alone).

    folds (N,) fold ids: the search itself is then cross-validated. A threshold wins on
    the samples it was picked on partly by chance (the best of ~44 candidates), so a
    pattern keeps its searched row only if the search, run without each fold and applied
    to it, beats the uniform policy on the held-out folds by `CV_MIN_Z` standard errors;
    otherwise it keeps the uniform policy (`per_pattern[p]["cross_validated"]`: the
    held-out error). The searches inside run without the min_z guard: on two thirds of
    the samples it would mostly keep the uniform policy and say nothing; the held-out
    folds are the guard there.
    """
    if groups is None:
        groups = torch.arange(label.numel())
    pattern = pattern_index(~missing)
    levels = torch.linspace(0.0, 1.0, candidates)
    tau = tau.clone()
    per_pattern: dict[int, dict[str, float]] = {}
    for p in pattern.unique().tolist():
        rows = pattern == p
        args = pred[rows], label[rows], gain[rows], missing[rows], groups[rows]
        tau[p], errors, uniform = _calibrate_pattern(*args, levels, rounds, min_z)
        if folds is not None and errors["calibrated"] < errors[uniform]:
            fixed = _uniform_tau(missing[rows].any(0), uniform)
            held_out = _cross_validated(*args, folds[rows], levels, rounds, 0.0)
            diff = _abs_errors(*args[:4], fixed) - held_out
            errors["cross_validated"] = float(held_out.mean())
            mean = float(diff.mean())
            if not math.isfinite(mean) or mean < CV_MIN_Z * _standard_error(diff, groups[rows]):
                tau[p], errors["calibrated"] = fixed, errors[uniform]
        per_pattern[p] = errors | {"samples": int(rows.sum())}
    total = label.numel()
    zero = sum(v["zero"] * v["samples"] for v in per_pattern.values()) / total
    best = sum(v["calibrated"] * v["samples"] for v in per_pattern.values()) / total
    return ThresholdCalibration(tau.tolist(), zero, best, int(total), per_pattern)


def repeat_batch(batch: MultimodalBatch, times: int) -> MultimodalBatch:
    """The batch stacked `times` times along the batch axis (for scoring decision variants)."""

    def rep(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.repeat(times, *([1] * (x.dim() - 1)))

    return MultimodalBatch(
        features={m: rep(x) for m, x in batch.features.items()},
        masks={m: rep(x) for m, x in batch.masks.items()},
        present=rep(batch.present),
        labels=rep(batch.labels),
        recalled=rep(batch.recalled),
        recalled_mask=rep(batch.recalled_mask),
        quality=rep(batch.quality),
    )
