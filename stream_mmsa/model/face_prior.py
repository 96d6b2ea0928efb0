"""The face prior: how the face's expression moves the score, by a stated rule, not by training.

Why a rule. No labelled face video exists here, so the fusion model's vision branch was
trained on a face unrelated to the label and learnt to ignore it (the checkpoint's card).
What the face says comes instead from a pretrained expert, the FER2013 classifier
(features/expression.py), summarised as a valence v in [-1, 1] over the window's face
frames, and from this rule, applied after the model:

- no face used in the window (vision late or missing), or the rule off: the model's score;
- text not used (late, missing, or no words in the window): the model has nothing learnt
  to go on, so the score follows the face: `c · SLOPE · v`, confidence `FACE_CONFIDENCE`;
- text used: text leads and the face adjusts it by `c · max_adjust · v` (±0.3 at most by
  default). The bound is a design choice, not a measurement: below the neutral band's
  half-width (0.5), the face can tip a reading near neutral but never overturn what the
  words say (turning a positive into a negative takes a move of at least 1.0).

`c` is how much of the window the face covers: 1 when vision is `present`, 1/2 when
`partial` (seen over less than `present_at` of the window).

Where SLOPE comes from. ../shared/reference/mmsa-published-results.md holds trimodal
models only, no vision-only row. The vision-only figure used is TFN's on CMU-MOSI (Zadeh
et al., EMNLP 2017, unimodal results, "TFN_visual"): binary accuracy 69.4 %, MAE 1.12, the
best face-only model of that table. If face evidence and label are jointly normal, a sign
agreement a means a correlation rho = sin(pi (a - 1/2)) (Sheppard's formula): rho = 0.572.
The least-squares slope of the label on the evidence is rho · sd(label) / sd(evidence);
with the valence's range [-1, 1] taken to spread as the label's [-3, 3], SLOPE = 3 rho =
1.72: a sure smile reads +1.72 (positive, not strongly positive), a neutral face 0, a sure
frown -1.72. FACE_CONFIDENCE = 1 / (1 + 1.12) = 0.47 is the model's own confidence
(1 / (1 + expected absolute error), model/fusion.py) at that published MAE.

The event's `sentiment.score` is the fused score; `sentiment.model_score` keeps the model's
own whenever the rule ran. Nothing here is fitted to labels: every constant is a published
figure or a stated bound.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

VISION_ONLY_ACC2 = 0.694
"""TFN_visual binary accuracy on CMU-MOSI (Zadeh et al., 2017)."""
VISION_ONLY_MAE = 1.12
"""TFN_visual MAE on CMU-MOSI (Zadeh et al., 2017)."""
RHO = math.sin(math.pi * (VISION_ONLY_ACC2 - 0.5))
SLOPE = 3.0 * RHO
FACE_CONFIDENCE = 1.0 / (1.0 + VISION_ONLY_MAE)
COVERAGE = {"present": 1.0, "partial": 0.5}
"""c by vision state; any other state means no face was used."""


class FacePriorConfig(BaseModel):
    """`engine.face_prior`: whether the face's expression moves the score, and how far."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    max_adjust: float = Field(
        0.3, ge=0, le=0.5, description="largest move of a text-led score by the face"
    )


def apply_face_prior(
    score: float,
    confidence: float,
    *,
    text_used: bool,
    vision_state: str,
    valence: float | None,
    config: FacePriorConfig,
) -> tuple[float, float] | None:
    """(score, confidence) by the rule in the module docstring; None where it does not apply
    (rule off, or no face used), which leaves the model's own."""
    coverage = COVERAGE.get(vision_state, 0.0)
    if not config.enabled or valence is None or coverage == 0.0:
        return None
    if not text_used:
        return _clip(coverage * SLOPE * valence), FACE_CONFIDENCE
    return _clip(score + coverage * config.max_adjust * valence), confidence


def _clip(score: float) -> float:
    return min(max(score, -3.0), 3.0)
