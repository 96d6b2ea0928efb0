"""Fusion model: shapes, missing patterns, padding invariance, losses, checkpoints, gate."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor

from stream_mmsa.bench.model import benchmark_fusion, synthetic_batch
from stream_mmsa.model.checkpoint import load_checkpoint, save_checkpoint
from stream_mmsa.model.config import LossWeights, ModelConfig
from stream_mmsa.model.evaluator import (
    SUBSETS,
    Decisions,
    EvaluatorInputs,
    fit_evaluator,
    gate_decisions,
    score_decisions,
    search_thresholds,
    subset_index,
)
from stream_mmsa.model.fusion import FusionModel
from stream_mmsa.model.prompts import N_PATTERNS
from stream_mmsa.model.sentiment import SentimentModel, load_sentiment_model, save_sentiment_model
from stream_mmsa.model.types import MODALITIES, MultimodalBatch

DIMS = {"text": 24, "audio": 10, "vision": 7}
LENGTHS = {"text": 9, "audio": 14, "vision": 5}
PATTERNS = [p for p in itertools.product([True, False], repeat=3) if any(p)]
MODES = ("gate", "always", "never")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These models are tiny: one thread avoids OpenMP stalls on a busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(**kw: object) -> ModelConfig:
    return ModelConfig(input_dims=DIMS, **kw)


@pytest.fixture
def model() -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(small_config()).eval()


def batch_with(present: list[tuple[bool, bool, bool]], seed: int = 0) -> MultimodalBatch:
    return synthetic_batch(
        DIMS, len(present), LENGTHS, torch.tensor(present), ragged=True, seed=seed
    )


def complete_of(batch: MultimodalBatch) -> MultimodalBatch:
    return replace(batch, present=torch.ones_like(batch.present))


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("mode", MODES)
def test_output_shapes(model: FusionModel, batch_size: int, mode: str) -> None:
    batch = synthetic_batch(DIMS, batch_size, LENGTHS, ragged=True)
    with torch.inference_mode():
        out = model(batch, imagine=mode)
    assert out.score.shape == out.confidence.shape == (batch_size,)
    assert out.weights.shape == out.gain.shape == out.imagined.shape == (batch_size, 3)
    assert out.imagined.dtype == torch.bool
    assert bool((out.score.abs() <= 3).all())
    assert bool(((out.confidence > 0) & (out.confidence <= 1)).all())


@pytest.mark.parametrize("mode", MODES)
def test_every_missing_pattern(model: FusionModel, mode: str) -> None:
    batch = batch_with([*PATTERNS, (False, False, False)])
    with torch.inference_mode():
        out = model(batch, imagine=mode)
    present = batch.present
    assert bool(torch.isfinite(out.score).all() and torch.isfinite(out.weights).all())
    assert bool((out.gain[present] == 0).all()) and not bool(out.imagined[present].any())
    used = present | out.imagined
    assert bool((out.weights[~used] == 0).all())
    sums = out.weights.sum(1)
    assert torch.allclose(sums[used.any(1)], torch.ones(int(used.any(1).sum())), atol=1e-6)
    if mode == "always":
        assert bool((out.imagined == ~present).all())
    if mode == "never":
        assert not bool(out.imagined.any())


def test_never_gives_missing_modalities_zero_weight(model: FusionModel) -> None:
    batch = batch_with(PATTERNS)
    with torch.inference_mode():
        out = model(batch, imagine="never")
    assert bool((out.weights[~batch.present] == 0).all())
    assert bool((out.weights[batch.present] > 0).all())


@pytest.mark.parametrize("mode", MODES)
def test_sample_alone_matches_padded_batch(model: FusionModel, mode: str) -> None:
    batch = batch_with(PATTERNS, seed=3)
    with torch.inference_mode():
        together = model(batch, imagine=mode)
        for i in range(batch.batch_size):
            lengths = {m: int(batch.masks[m][i].sum()) for m in MODALITIES}
            alone = MultimodalBatch(
                features={m: batch.features[m][i : i + 1, : lengths[m]] for m in MODALITIES},
                masks={m: batch.masks[m][i : i + 1, : lengths[m]] for m in MODALITIES},
                present=batch.present[i : i + 1],
            )
            out = model(alone, imagine=mode)
            for name in ("score", "confidence", "weights", "gain"):
                got, want = getattr(out, name)[0], getattr(together, name)[i]
                assert torch.allclose(got, want, atol=1e-5), (name, i, got, want)
            assert torch.equal(out.imagined[0], together.imagined[i])


@pytest.mark.parametrize("mode", MODES)
def test_missing_and_masked_features_are_ignored(model: FusionModel, mode: str) -> None:
    batch = batch_with(PATTERNS, seed=5)
    garbage = {}
    for j, m in enumerate(MODALITIES):
        x = batch.features[m].clone()
        hidden = ~(batch.masks[m] & batch.present[:, j : j + 1])
        x[hidden] = torch.randn_like(x[hidden]) * 1e4
        x[hidden & (torch.rand(hidden.shape) < 0.3)] = float("nan")
        garbage[m] = x
    with torch.inference_mode():
        clean = model(batch, imagine=mode)
        dirty = model(replace(batch, features=garbage), imagine=mode)
    assert torch.allclose(clean.score, dirty.score, atol=1e-6)
    assert torch.allclose(clean.gain, dirty.gain, atol=1e-6)


def test_empty_and_unseen_inputs_still_answer(model: FusionModel) -> None:
    """A window with no modality at all, or zero text tokens, must not crash or give NaN."""
    batch = synthetic_batch(
        DIMS, 2, {"text": 0, "audio": 4, "vision": 3}, torch.tensor([[False, True, False]] * 2)
    )
    nothing = replace(batch, present=torch.zeros(2, 3, dtype=torch.bool))
    with torch.inference_mode():
        for b in (batch, nothing):
            out = model(b)
            assert bool(torch.isfinite(out.score).all() and torch.isfinite(out.confidence).all())
    assert bool((model(nothing, imagine="never").weights == 0).all())


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"use_prompts": False},
        {"dynamic_weighting": False},
        {"cross_layers": 2, "multilevel_prompts": False, "score_activation": "clamp"},
    ],
)
def test_training_losses_finite_and_reach_every_part(kw: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = FusionModel(small_config(**kw)).train()
    missing = batch_with(PATTERNS * 2)
    losses = model.training_losses(complete_of(missing), missing, LossWeights(), distill=True)
    assert "total" in losses
    assert all(bool(torch.isfinite(v)) for v in losses.values()), losses
    losses["total"].backward()
    for p in model.parameters():
        assert p.grad is None or bool(torch.isfinite(p.grad).all())
    parts = [model.imagination.queries, model.imagination.kv.weight, model.encoders[0].weight]
    # the evaluator learns apart, on a frozen backbone (fit_evaluator)
    assert all(p.grad is None for p in model.evaluator.parameters())
    if model.prompts is not None:
        prompts = model.prompts
        parts += [
            prompts.shared,
            prompts.views,
            prompts.specific,
            prompts.missing_type,
        ]
        parts += [] if prompts.alpha is None else [prompts.alpha]
    if model.weighting is not None:
        parts += [model.weighting.critic.a, model.weighting.temperature]
    for p in parts:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_without_distillation_its_terms_are_zero(model: FusionModel) -> None:
    missing = batch_with(PATTERNS)
    losses = model.train().training_losses(complete_of(missing), missing, LossWeights(), False)
    assert float(losses["distill_feature"]) == 0.0
    assert bool(torch.isfinite(losses["total"]))


def test_tiny_overfit_lowers_loss() -> None:
    torch.manual_seed(0)
    model = FusionModel(small_config(d_model=16, self_layers=1, dropout=0.0)).train()
    missing = batch_with(PATTERNS * 2, seed=1)
    complete = complete_of(missing)
    weights = LossWeights()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for _ in range(25):
        losses = model.training_losses(complete, missing, weights, distill=True)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append(float(losses["task_complete"].detach() + losses["task_missing"].detach()))
    assert sum(history[-5:]) < 0.5 * sum(history[:5]), history


def test_checkpoint_round_trip(tmp_path, model: FusionModel) -> None:
    model.tau.copy_(torch.randn(N_PATTERNS, 3))
    model.weighting.bank.normal_()
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, model, {"label_scale": 3.0, "card": "research use only"})
    loaded, extra = load_checkpoint(path, map_location="cpu")
    assert extra == {"label_scale": 3.0, "card": "research use only"}
    assert loaded.config == model.config and not loaded.training
    batch = batch_with(PATTERNS)
    with torch.inference_mode():
        for mode in MODES:
            a, b = model(batch, imagine=mode), loaded(batch, imagine=mode)
            assert torch.equal(a.score, b.score) and torch.equal(a.imagined, b.imagined)


def test_a_seed_ensemble_averages_its_members_and_survives_a_checkpoint(tmp_path) -> None:
    members = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        members.append(FusionModel(small_config()).eval())
    members[0].tau.fill_(-math.inf)  # imagines every missing modality; the others never
    for m in members[1:]:
        m.tau.fill_(math.inf)
    ensemble = SentimentModel(members[0], None, members[1:]).eval()
    batch = batch_with(PATTERNS)
    with torch.inference_mode():
        decided = members[0](batch)
        # The first model decides for all: the others imagine what it imagines.
        outs = [decided, *(m.run(batch, imagine_mask=decided.imagined) for m in members[1:])]
        alone = [m(batch) for m in members[1:]]
        out = ensemble(batch)
    assert decided.imagined.any() and not any(o.imagined.any() for o in alone)
    assert torch.equal(out.imagined, decided.imagined)
    assert torch.allclose(out.score, torch.stack([o.score for o in outs]).mean(0))
    assert not torch.allclose(out.score, torch.stack([o.score for o in [decided, *alone]]).mean(0))
    assert torch.equal(out.gain, decided.gain)
    with torch.inference_mode():  # scored decisions are the ensemble's averaged scores
        data = score_decisions(members[0], [(complete_of(batch), batch)], members[1:])
    served = data.pred.gather(1, subset_index(decided.imagined & data.missing)[:, None])
    assert torch.allclose(served.squeeze(1), out.score, atol=1e-5)
    path = tmp_path / "ensemble.pt"
    save_sentiment_model(path, ensemble, {"card": "two seeds"})
    loaded, extra = load_sentiment_model(path)
    assert extra == {"card": "two seeds"} and len(loaded.members) == 2
    with torch.inference_mode():
        assert torch.equal(loaded(batch).score, out.score)
    with pytest.raises(RuntimeError, match="not trained"):
        ensemble.training_losses(batch, batch, LossWeights(), distill=True)
    loaded.keep_first(2)  # engine.ensemble_models: the first two models, averaged
    with torch.inference_mode():
        assert torch.allclose(loaded(batch).score, torch.stack([o.score for o in outs[:2]]).mean(0))
    loaded.keep_first(1)
    with torch.inference_mode():
        assert torch.equal(loaded(batch).score, decided.score)
    with pytest.raises(ValueError, match="at least one"):
        loaded.keep_first(0)


def with_recall(batch: MultimodalBatch, seed: int = 0) -> MultimodalBatch:
    """The batch with recalled text (some samples have none) and random quality signals."""
    gen = torch.Generator().manual_seed(seed)
    n = batch.batch_size
    recalled = torch.randn(n, 6, DIMS["text"], generator=gen)
    mask = torch.ones(n, 6, dtype=torch.bool)
    mask[::3] = False
    quality = torch.rand(n, 4, generator=gen)
    return replace(batch, recalled=recalled, recalled_mask=mask, quality=quality)


def test_fitted_gate_sets_tau_and_beats_uniform_choices(model: FusionModel) -> None:
    """On the samples it was fitted on, the gate's τ reproduces the reported errors and,
    per pattern, is no worse than always or never imagine."""
    missing = [with_recall(batch_with(PATTERNS * 3, seed=s), seed=s) for s in range(3)]
    data = score_decisions(model, [(complete_of(b), b) for b in missing])
    result = fit_evaluator(model, data, steps=50).calibration
    assert torch.equal(model.tau, torch.tensor(result.tau))
    rows = data.missing.any(1)
    with torch.inference_mode():
        errors = torch.cat([(model(b).score - b.labels).abs() for b in missing])
    assert abs(float(errors[rows].mean()) - result.mae_calibrated) < 1e-5
    for row in result.per_pattern.values():
        assert row["calibrated"] <= min(row["always"], row["never"]) + 1e-9


def test_gate_decisions_match_the_live_model(model: FusionModel) -> None:
    """What gate_decisions says on scored samples is what the model does on the batch."""
    missing = with_recall(batch_with(PATTERNS * 4, seed=1), seed=1)
    model.tau.copy_(torch.randn(N_PATTERNS, 3, generator=torch.Generator().manual_seed(2)))
    data = score_decisions(model, [(complete_of(missing), missing)])
    with torch.inference_mode():
        out = model(missing)
    assert torch.equal(gate_decisions(model, data), out.imagined)
    assert torch.allclose(data.errors(out.imagined), (out.score - missing.labels).abs())


def test_evaluator_learns_a_decision_from_the_quality_signals(model: FusionModel) -> None:
    """Imagining the missing text is right exactly when quality signal 1 says the recalled
    text still belongs to the sentence: the fitted gate must find that rule (near the
    oracle), where always and never imagine are each wrong half the time."""
    n = 400
    gen = torch.Generator().manual_seed(0)
    reliable = torch.rand(n, generator=gen) < 0.5
    quality = torch.rand(n, 4, generator=gen)
    quality[:, 1] = reliable.float()
    label = torch.rand(n, generator=gen) * 6 - 3
    pred = label[:, None].repeat(1, 8)
    text_imagined = SUBSETS[:, 0]
    pred[:, text_imagined] += torch.where(reliable, 0.0, 2.0)[:, None]
    pred[:, ~text_imagined] += torch.where(reliable, 1.0, 0.0)[:, None]
    d = model.config.d_model
    inputs = EvaluatorInputs(
        torch.randn(n, 3, d, generator=gen),
        torch.randn(n, d, generator=gen),
        quality,
        torch.full((n,), 6),
    )
    missing = torch.tensor([[True, False, False]]).repeat(n, 1)
    data = Decisions(inputs, pred, label, label, missing, [str(i) for i in range(n)])
    fit_evaluator(model, data)
    gate = float(data.errors(gate_decisions(model, data)).mean())
    always = float(data.errors(missing).mean())
    never = float(data.errors(torch.zeros_like(missing)).mean())
    assert gate < 0.2 < 0.5 < min(always, never)


def test_evaluation_comes_before_generation(model: FusionModel) -> None:
    """The generators run only for the samples the gate chose to imagine something for,
    and imagined text is the recalled text where there is some."""
    batch = with_recall(batch_with(PATTERNS * 2, seed=3), seed=3)
    seen: list[int] = []
    hook = model.imagination.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    with torch.inference_mode():
        never = model(batch, imagine="never")
        always = model(batch, imagine="always")
    hook.remove()
    has_recall = batch.recalled_mask.any(1)
    needs_generator = (~batch.present[:, 1:]).any(1) | (~batch.present[:, 0] & ~has_recall)
    assert not bool(never.imagined.any())
    assert seen == [int(needs_generator.sum())]
    # text imagined from recall == the recalled text read as the window's text
    rows = (~batch.present[:, 0] & has_recall & batch.present[:, 1:].all(1)).nonzero().flatten()
    assert len(rows) > 0
    as_text = replace(
        batch,
        features={**batch.features, "text": batch.recalled},
        masks={**batch.masks, "text": batch.recalled_mask},
        present=torch.ones_like(batch.present),
    )
    with torch.inference_mode():
        read = model(as_text, imagine="never")
    assert torch.allclose(always.score[rows], read.score[rows], atol=1e-5)


def test_calibration_picks_always_and_never_per_pattern() -> None:
    """Imagining vision helps when only vision is missing, imagining text hurts when only
    text is: a τ per modality cannot serve both; a τ per pattern opens one, closes the other."""
    n = 40
    torch.manual_seed(0)
    label = torch.randn(2 * n)
    gain = torch.zeros(2 * n, 3)
    gain[:n, 2] = torch.randn(n)  # vision missing: the evaluator's guesses are noise
    gain[n:, 0] = torch.randn(n)  # text missing
    missing = torch.zeros(2 * n, 3, dtype=torch.bool)
    missing[:n, 2] = True
    missing[n:, 0] = True
    pred = (label + 1.0)[:, None].repeat(1, 8)
    pred[:n, 4] = label[:n]  # imagining vision gives the label
    pred[n:, 0] = label[n:]  # skipping text gives the label
    before = torch.full((N_PATTERNS, 3), 0.5)
    result = search_thresholds(pred, label, gain, missing, before)
    tau = torch.tensor(result.tau)
    audio_text, audio_vision = 0b011, 0b110
    assert tau[audio_text, 2] == -math.inf and tau[audio_vision, 0] == math.inf
    assert result.mae_calibrated == 0.0 < result.mae_at_zero
    others = [p for p in range(N_PATTERNS) if p not in (audio_text, audio_vision)]
    assert torch.equal(tau[others], before[others])
    for p in (audio_text, audio_vision):
        row = result.per_pattern[p]
        assert row["samples"] == n and row["calibrated"] == 0.0
    assert result.per_pattern[audio_text]["never"] == pytest.approx(1.0)
    assert result.per_pattern[audio_vision]["always"] == pytest.approx(1.0)


def _one_pattern_case(informative: bool, n: int = 400) -> tuple[Tensor, ...]:
    """Vision missing; imagining it is exact for a random half of the samples and off by
    one for the others, skipping the other way round, so always and never tie. The
    evaluator's gain ranks the samples right, though all above 0 (informative), or is
    noise unrelated to the benefit."""
    gen = torch.Generator().manual_seed(0)
    label = torch.randn(n, generator=gen)
    helps = torch.randperm(n, generator=gen) < n // 2
    pred = torch.where(helps, label + 1.0, label)[:, None].repeat(1, 8)
    pred[:, 4] = torch.where(helps, label, label + 1.0)
    gain = torch.zeros(n, 3)
    gain[:, 2] = torch.where(helps, 0.7, 0.3) if informative else torch.randn(n, generator=gen)
    missing = torch.zeros(n, 3, dtype=torch.bool)
    missing[:, 2] = True
    return pred, label, gain, missing


def test_in_between_threshold_needs_significant_gain() -> None:
    """Noise gains: a threshold (τ = 0 included) only fits validation noise, so min_z keeps
    a uniform policy; informative gains: a threshold in between beats always and never."""
    tau0 = torch.zeros(N_PATTERNS, 3)
    noise = _one_pattern_case(informative=False)
    fitted = search_thresholds(*noise, tau0, min_z=0.0).per_pattern[3]
    assert fitted["calibrated"] < min(fitted["always"], fitted["never"], fitted["zero"])
    guarded = search_thresholds(*noise, tau0)
    row = guarded.per_pattern[3]
    assert row["calibrated"] == row["always"]  # always and never tie: the incumbent stays
    informative = search_thresholds(*_one_pattern_case(informative=True), tau0)
    row = informative.per_pattern[3]
    assert row["calibrated"] < 1e-6 < min(row["always"], row["never"]) - 0.4
    assert math.isfinite(informative.tau[3][2])


@pytest.mark.parametrize(("spread", "policy"), [(1.98, "always"), (1.0, "never")])
def test_never_replaces_always_only_on_significant_evidence(spread: float, policy: str) -> None:
    """Imagining vision is off by 1 everywhere; skipping it by U(0, spread): 0.01 better on
    average (within noise, the incumbent always stays) or 0.5 better (never takes over)."""
    gen = torch.Generator().manual_seed(0)
    n = 400
    label = torch.randn(n, generator=gen)
    pred = (label + spread * torch.rand(n, generator=gen))[:, None].repeat(1, 8)
    pred[:, 4] = label + 1.0
    missing = torch.zeros(n, 3, dtype=torch.bool)
    missing[:, 2] = True
    gain = torch.randn(n, 3, generator=gen)
    fitted = search_thresholds(pred, label, gain, missing, torch.zeros(N_PATTERNS, 3))
    assert fitted.tau[3][2] == (-math.inf if policy == "always" else math.inf)


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        ModelConfig(input_dims={"text": 3, "audio": 2})
    with pytest.raises(ValidationError):
        ModelConfig(d_model=30, heads=4)
    with pytest.raises(ValidationError):
        ModelConfig(unknown=1)
    with pytest.raises(ValidationError):
        LossWeights(distil=1.0)
    assert ModelConfig().input_dims == {"text": 384, "audio": 74, "vision": 35}


def test_benchmark_rows(model: FusionModel) -> None:
    rows = benchmark_fusion(model, batch_sizes=(1, 3), seq_len=6, repeats=3, warmup=1)
    assert len(rows) == 6 and all(r["windows_per_s"] > 0 for r in rows)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(model: FusionModel) -> None:
    batch = batch_with(PATTERNS)
    with torch.inference_mode():
        want = model(batch).score
        got = model.to("cuda")(batch.to("cuda")).score.cpu()
    assert torch.allclose(got, want, atol=1e-4)


def test_windows_of_one_utterance_count_as_one_piece_of_evidence() -> None:
    """The noise case with each sample repeated as 8 windows of its utterance: counted
    window by window the repeats make a chance threshold look significant (by one standard
    error); counted over utterances (groups) the guard keeps a uniform policy, as it does
    for the samples alone."""
    tau0 = torch.zeros(N_PATTERNS, 3)
    alone = search_thresholds(*_one_pattern_case(informative=False, n=200), tau0)
    assert alone.per_pattern[3]["calibrated"] == pytest.approx(
        min(alone.per_pattern[3][k] for k in ("always", "never"))
    )
    windows = [x.repeat_interleave(8, 0) for x in _one_pattern_case(informative=False, n=200)]
    naive = search_thresholds(*windows, tau0, min_z=1.0).per_pattern[3]
    assert naive["calibrated"] < min(naive["always"], naive["never"])
    groups = torch.arange(200).repeat_interleave(8)
    clustered = search_thresholds(*windows, tau0, min_z=1.0, groups=groups).per_pattern[3]
    assert clustered["calibrated"] == pytest.approx(min(clustered["always"], clustered["never"]))


def test_a_threshold_that_wins_only_where_it_was_searched_is_dropped() -> None:
    """Noise gains with no guard (min_z 0): the search finds a threshold that beats always
    and never on its own samples; cross-validated over 3 folds it does not win on the
    folds it was not searched on, so the pattern keeps the uniform policy. Informative
    gains keep their threshold."""
    tau0 = torch.zeros(N_PATTERNS, 3)
    folds = torch.arange(400) % 3
    noise = _one_pattern_case(informative=False)
    row = search_thresholds(*noise, tau0, min_z=0.0, folds=folds).per_pattern[3]
    assert row["cross_validated"] >= min(row["always"], row["never"])
    assert row["calibrated"] == pytest.approx(min(row["always"], row["never"]))
    informative = search_thresholds(*_one_pattern_case(informative=True), tau0, folds=folds)
    row = informative.per_pattern[3]
    assert row["cross_validated"] < 1e-6 and row["calibrated"] < 1e-6
    assert math.isfinite(informative.tau[3][2])
