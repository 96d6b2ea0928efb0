"""The evaluator stays informative on the side-channel benchmark, and the study's statistics.

The benchmark's recalled text is faithful with a probability the evaluator can read
(train/synthetic.py), so an evaluator that learned anything ranks the realised gain of
imagining the text. The threshold: with ~300 test samples an uninformative score has a
Spearman correlation within ±0.12 of 0 (two standard errors, 2/√300); the full study
(docs/ablation.json) measures 0.19 over all settings (0.15 at its lowest seed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stream_mmsa.config import load_config
from stream_mmsa.model.evaluator import (
    Decisions,
    EvaluatorInputs,
    MissingModalityEvaluator,
    fit_evaluator,
    gate_decisions,
    score_decisions,
)
from stream_mmsa.model.prompts import N_PATTERNS
from stream_mmsa.model.types import QUALITY_SIGNALS
from stream_mmsa.train.ablation import _pairs, summary, verdict
from stream_mmsa.train.gate_study import Judged, auroc, bootstrap, fit_plain, judge, spearman
from stream_mmsa.train.late_text import (
    LatePair,
    by_video,
    decision_profile,
    realised_gains,
    video_key,
    videos_of_groups,
)
from stream_mmsa.train.protocols import ModalityPattern
from stream_mmsa.train.run import build_model
from stream_mmsa.train.synthetic import make_synthetic
from stream_mmsa.train.trainer import fit

INFORMATIVE = 0.12


@pytest.mark.slow
def test_evaluator_ranks_the_gain_of_imagining_late_text() -> None:
    config = load_config("configs/synthetic.yaml", ["train.epochs=3", "seed=5"])
    torch.set_num_threads(1)
    splits = make_synthetic(600, 300, 300, seed=5)
    model = build_model(config, splits["train"].dims, None)
    fusion = fit(config, splits["train"], splits["valid"], model).model.fusion
    late = ModalityPattern("missing_text")
    fitted = score_decisions(fusion, _pairs(splits["valid"], late, 5))
    fit_evaluator(fusion, fitted, seed=5)
    test = score_decisions(fusion, _pairs(splits["test"], late, 6))
    judged = judge(fusion, test, fit_plain(fitted, 5), np.arange(len(test.label)))
    rho = spearman(judged.predicted, judged.realised)
    assert rho > INFORMATIVE, rho
    assert judged.errors["gate"].mean() < min(
        judged.errors["always"].mean(), judged.errors["never"].mean()
    )


def test_auroc_and_spearman_on_known_orders() -> None:
    score = np.array([0.1, 0.4, 0.35, 0.8])
    assert auroc(score, np.array([False, False, True, True])) == 0.75
    assert auroc(score, score > 0.3) == 1.0
    assert spearman(score, score * 2 + 1) == pytest.approx(1.0)
    assert spearman(score, -score) == pytest.approx(-1.0)


def test_bootstrap_interval_covers_a_known_difference() -> None:
    """Gate errors 0.1 below both fixed policies on every sample: the interval is tight
    around -0.1; with groups shared by seeds one draw serves them all."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 1.5, 200)
    errors = {"gate": base - 0.1, "always": base, "never": base + 0.2, "oracle": base - 0.3}
    errors["plain"] = base
    judged = Judged(errors, np.arange(200) // 2, np.zeros(0), np.zeros(0), 0.5)
    result = bootstrap([{"s": judged}, {"s": judged}], resamples=200, shared=True)
    row = result["gate - fixed"]
    assert row["difference"] == pytest.approx(-0.1)
    assert row["ci95_low"] == pytest.approx(-0.1) and row["ci95_high"] == pytest.approx(-0.1)
    assert result["gate - oracle"]["difference"] == pytest.approx(0.2)


class _GateOnly(nn.Module):
    """What fit_evaluator and gate_decisions touch of a FusionModel: the evaluator and τ."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.evaluator = MissingModalityEvaluator(d, 16)
        self.register_buffer("tau", torch.zeros(N_PATTERNS, 3))


def _known_rule(groups: int, seed: int) -> Decisions:
    """Late text in utterances of 10 windows: imagining it helps iff recall_continues, by
    how much depends on the utterance's label; the summaries name the utterance only."""
    gen = torch.Generator().manual_seed(seed)
    n, d = groups * 10, 8
    group = torch.arange(n) // 10
    label = (torch.randn(groups, generator=gen) * 1.5)[group]
    continues = torch.rand(n, generator=gen) < 0.5
    noise = torch.randn(n, generator=gen) * 0.5
    imagined = torch.where(continues, label + noise, -0.5 * label + noise)
    pred = torch.zeros(n, 8)
    pred[:, 1] = imagined
    quality = torch.zeros(n, len(QUALITY_SIGNALS))
    quality[:, QUALITY_SIGNALS.index("recall_continues")] = continues.float()
    quality[:, QUALITY_SIGNALS.index("recall_words")] = torch.rand(n, generator=gen)
    available = torch.randn(groups, 3, d, generator=gen)[group]
    available[:, 0] = 0.0
    recalled = torch.randn(groups, d, generator=gen)[group]
    missing = torch.zeros(n, 3, dtype=torch.bool)
    missing[:, 0] = True
    inputs = EvaluatorInputs(available, recalled, quality, torch.full((n,), 6))
    ids = [f"u{seed}-{int(g)}#{i}" for i, g in enumerate(group)]
    return Decisions(inputs, pred, label, label, missing, ids)


def test_fit_evaluator_learns_a_rule_from_a_quality_signal() -> None:
    """The rule lives in one quality signal and the summaries can only memorise utterances:
    on new utterances the fitted gate follows the signal and beats both fixed policies."""
    model = _GateOnly(8)
    fit_evaluator(model, _known_rule(40, 0), seed=0)  # type: ignore[arg-type]
    test = _known_rule(40, 1)
    gate = gate_decisions(model, test)  # type: ignore[arg-type]
    continues = test.inputs.quality[:, QUALITY_SIGNALS.index("recall_continues")] > 0.5
    assert float((gate[:, 0] == continues).float().mean()) > 0.9
    fixed = min(test.errors(test.missing).mean(), test.errors(~test.missing).mean())
    assert test.errors(gate).mean() < fixed


def _video_rule(videos: int, seed: int, d: int = 32) -> Decisions:
    """Late text in videos of 4 utterances of 10 windows: imagining it helps in half of the
    videos and hurts in the others, and only the recalled summary, one per video (as
    recalled words name a video's topic), tells them apart: nothing that carries over to a
    new video."""
    gen = torch.Generator().manual_seed(seed)
    n = videos * 40
    video, utterance = torch.arange(n) // 40, torch.arange(n) // 10
    label = (torch.randn(videos * 4, generator=gen) * 1.5)[utterance]
    helps = (torch.rand(videos, generator=gen) < 0.5)[video]
    noise = torch.randn(n, generator=gen) * 0.5
    pred = torch.zeros(n, 8)
    pred[:, 1] = torch.where(helps, label + noise, -0.5 * label + noise)
    quality = torch.zeros(n, len(QUALITY_SIGNALS))
    quality[:, QUALITY_SIGNALS.index("recall_words")] = torch.rand(n, generator=gen)
    available = torch.randn(videos * 4, 3, d, generator=gen)[utterance]
    available[:, 0] = 0.0
    recalled = 3 * torch.randn(videos, d, generator=gen)[video]
    missing = torch.zeros(n, 3, dtype=torch.bool)
    missing[:, 0] = True
    inputs = EvaluatorInputs(available, recalled, quality, torch.full((n,), 6))
    ids = [f"v{seed}-{int(u) // 4}_{int(u)}#{i}" for i, u in enumerate(utterance)]
    return Decisions(inputs, pred, label, label, missing, ids)


def _video(sample_id: str) -> str:
    """`_video_rule`'s ids are "<video>_<utterance>#<window>"."""
    return sample_id.split("#", 1)[0].rsplit("_", 1)[0]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 3])
def test_folds_by_video_keep_a_video_rule_from_passing_as_a_decision(seed: int) -> None:
    """Folded by utterance, the evaluator learns each video from its other utterances, the
    out-of-fold scores look informative and a threshold is kept; folded by video
    (`groups`), the search finds nothing that holds on new videos: a uniform policy."""
    data = _video_rule(12, seed)
    by_utterance, by_video = _GateOnly(32), _GateOnly(32)
    fit_evaluator(by_utterance, data, seed=seed)  # type: ignore[arg-type]
    fit_evaluator(by_video, data, seed=seed, groups=data.groups(_video))  # type: ignore[arg-type]
    assert math.isfinite(float(by_utterance.tau[6, 0]))
    assert math.isinf(float(by_video.tau[6, 0]))


def test_a_gate_that_never_skipped_says_so() -> None:
    rows = torch.tensor([[1.0, 1.0, 0.2], [1.0, 0.0, -0.1]])  # imagined, continues, gain
    profile = decision_profile(rows)
    assert profile["gain_when_skipped"] is None
    assert realised_gains(profile) == "realised gain when imagined +0.050 MAE, none skipped"


def test_a_window_counts_for_its_video_whatever_its_id_holds() -> None:
    """MOSEI's video and clip ids both hold underscores: the video comes from the record."""
    pairs = [
        LatePair(None, None, video, utterance)
        for utterance, video in [("-3g5_yA_82_7645", "-3g5_yA"), ("03bSnISJMiM_11", "03bSnISJMiM")]  # type: ignore[arg-type]
    ]
    key = video_key(pairs)
    assert key("-3g5_yA_82_7645#4") == "-3g5_yA"
    assert key("03bSnISJMiM_11#0") == "03bSnISJMiM"


def test_a_bootstrap_by_video_draws_whole_videos() -> None:
    """Two videos, one where the gate wins by 0.2 and one where it loses by 0.2: over their
    utterances the interval looks tight around 0, over videos it spans both videos."""
    pairs = [
        LatePair(None, None, video, f"{video}_{u}")  # type: ignore[arg-type]
        for video in ("a", "b")
        for u in range(20)
    ]
    of_group = videos_of_groups(pairs)
    assert list(of_group) == [0] * 20 + [1] * 20  # utterance groups, in _utterance_groups order
    base = np.ones(40)
    errors = {"gate": base + np.where(of_group == 0, -0.2, 0.2), "always": base, "never": base}
    errors |= {"oracle": base - 0.3, "plain": base}
    study = [{"late text": Judged(errors, np.arange(40), np.zeros(0), np.zeros(0), 0.5)}]
    grouped = by_video(study, [of_group])
    assert list(np.unique(grouped[0]["late text"].groups)) == [0, 1]
    over_utterances = bootstrap(study, resamples=300, shared=True)["gate - fixed"]
    over_videos = bootstrap(grouped, resamples=300, shared=True)["gate - fixed"]
    assert over_videos["ci95_low"] == pytest.approx(-0.2)
    assert over_videos["ci95_high"] == pytest.approx(0.2)
    assert over_utterances["ci95_high"] - over_utterances["ci95_low"] < 0.3
    figures = {"intervals": bootstrap(study, resamples=50, shared=True)}
    figures |= {"intervals_by_video": {**bootstrap(grouped, resamples=50), "videos": {"count": 2}}}
    line = summary(figures | {"ranking": {"spearman": 0.1}}, "late_text", Path("a.md"))
    assert line.endswith(
        "Drawing whole videos (2) instead of utterances: "
        "gate − better fixed +0.000 [-0.200, +0.200]."
    )


@pytest.mark.parametrize(
    ("low", "high", "says"),
    [(-0.04, -0.01, "beats"), (-0.01, 0.02, "does not beat"), (0.01, 0.05, "is worse than")],
)
def test_the_verdict_reads_the_interval_on_both_sides(low: float, high: float, says: str) -> None:
    row = {"difference": (low + high) / 2, "ci95_low": low, "ci95_high": high}
    assert f"The gate {says} the better fixed policy" in verdict({"gate - fixed": row})


def test_each_late_text_protocol_has_its_own_report_and_names_it() -> None:
    """A run across corpora writes its own report, so its README command reproduces it."""
    from argparse import Namespace

    from stream_mmsa.train.late_text import SEEDS, _command, _default_out

    mosei = Path("../shared/data/mosei/label.csv")
    args = Namespace(config=Path("configs/engine.yaml"), seeds=SEEDS, fit_on=mosei, out=None)
    args.out = _default_out(args)
    assert args.out == Path("docs/ablation-spoken-across.md")
    assert _command(args) == (
        "python -m stream_mmsa.train.late_text --config configs/engine.yaml "
        "--fit-on ../shared/data/mosei/label.csv"
    )
    args.out = Path("elsewhere.md")
    assert _command(args).endswith("--fit-on ../shared/data/mosei/label.csv --out elsewhere.md")
    assert _default_out(Namespace(fit_on=None)) == Path("docs/ablation-spoken.md")
