"""The face prior: text absent → the score follows the face; text present → a bounded nudge."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from stream_mmsa.config import load_config
from stream_mmsa.events import NEUTRAL_BAND, sentiment_label
from stream_mmsa.model.face_prior import (
    FACE_CONFIDENCE,
    SLOPE,
    FacePriorConfig,
    apply_face_prior,
)

ON = FacePriorConfig()


def fuse(score: float, text_used: bool, valence: float | None, state: str = "present", **kw):
    return apply_face_prior(
        score,
        0.8,
        text_used=text_used,
        vision_state=state,
        valence=valence,
        config=FacePriorConfig(**kw),
    )


def test_constants_come_from_the_published_vision_only_figures() -> None:
    rho = math.sin(math.pi * (0.694 - 0.5))  # TFN_visual, binary accuracy 69.4 %
    mae = 1.12  # TFN_visual MAE
    slope, confidence = SLOPE, FACE_CONFIDENCE
    assert (slope, confidence) == pytest.approx((3 * rho, 1 / (1 + mae)))
    assert round(SLOPE, 2) == 1.72


def test_without_text_the_score_follows_the_face() -> None:
    for model_score in (-2.0, 0.0, 1.0):  # whatever the model said without words
        score, confidence = fuse(model_score, text_used=False, valence=0.9)
        assert score == pytest.approx(SLOPE * 0.9)
        assert confidence == pytest.approx(FACE_CONFIDENCE)
    assert sentiment_label(fuse(-1.0, False, 0.9)[0]) == "positive"  # a silent smile
    assert sentiment_label(fuse(1.0, False, -0.9)[0]) == "negative"  # a silent frown
    assert sentiment_label(fuse(1.5, False, 0.0)[0]) == "neutral"  # a silent, still face
    assert fuse(0.0, False, 0.9, state="partial")[0] == pytest.approx(SLOPE * 0.9 / 2)


def test_with_text_the_face_only_nudges() -> None:
    for score in (-2.5, -0.4, 0.0, 0.4, 2.5):
        for valence in (-1.0, -0.3, 0.0, 0.5, 1.0):
            fused, confidence = fuse(score, text_used=True, valence=valence)
            assert fused == pytest.approx(score + 0.3 * valence)
            assert abs(fused - score) <= ON.max_adjust + 1e-9
            assert confidence == 0.8  # the model's: text leads
    assert fuse(1.0, True, 1.0, state="partial")[0] == pytest.approx(1.15)
    assert fuse(2.9, True, 1.0)[0] == 3.0  # stays on the scale
    # Never enough to turn what the words say around: only readings near neutral move band.
    assert ON.max_adjust < NEUTRAL_BAND
    assert sentiment_label(fuse(-0.6, True, 1.0)[0]) == "neutral"
    assert sentiment_label(fuse(-0.9, True, 1.0)[0]) == "negative"


def test_no_face_or_rule_off_leaves_the_model_alone() -> None:
    assert fuse(1.0, False, None) is None
    assert fuse(1.0, False, 0.9, state="missing") is None
    assert fuse(1.0, False, 0.9, state="late") is None
    assert fuse(1.0, False, 0.9, enabled=False) is None
    assert fuse(1.0, True, 0.9, max_adjust=0.0)[0] == 1.0


def test_configurable_from_the_engine_section() -> None:
    config = load_config(overrides=["engine.face_prior.enabled=false"])
    assert not config.engine.face_prior.enabled and config.engine.face_expression
    assert load_config().engine.face_prior == ON and ON.enabled
    with pytest.raises(ValidationError):
        FacePriorConfig(max_adjust=0.8)  # could overturn the words
