"""A synthetic multimodal benchmark with known ground truth for missing-modality mechanisms.

This is NOT sentiment data and says nothing about real speakers: it exists so
that imputation, the missing-modality evaluator and the protocols can be tested
against a process whose answers are known in advance.

Generative process (per sample; all draws from one seeded generator per split)
------------------------------------------------------------------------------
1. Label ``y ~ Uniform(-3, 3)``; its unit-variance version is ``u = y / sqrt(3)``.
2. Shared style latent ``s ~ N(0, 1)`` (think "arousal"), expressed by every
   modality. It makes modalities predictable from each other beyond sentiment
   and it decides the regime, so the regime can be read from whichever
   modalities are available.
3. Regime, a deterministic function of ``s``:
   ``sarcastic`` if ``s > 1.2816`` (10 %), ``masked`` if ``s < -0.8416`` (20 %),
   else ``congruent`` (70 %).
4. Displayed affect ``xi ~ Uniform(-sqrt(3), sqrt(3))``, independent of ``y``.
5. Sentiment each modality expresses, ``e_m``:

   =========  ===========  =======  =======
   regime     text         audio    vision
   =========  ===========  =======  =======
   congruent  u            u        u
   sarcastic  -u           u        u
   masked     u            xi       xi
   =========  ===========  =======  =======

6. Lengths ``T_m ~ UniformInt[8, 40]``, independent per modality and sample.
7. Frames, ``t = 0 .. T_m - 1``:
   ``x_m[t] = a_m * e_m * d_m + b_m * s * g_m + sigma_m * n_m[t]``,
   where ``d_m`` and ``g_m`` are fixed orthonormal directions in R^{D_m} (drawn once
   from ``WORLD_SEED``, identical for every seed, so seeds resample data from one
   task) and ``n_m`` is AR(1) noise per dimension: ``n[0] = z0``,
   ``n[t] = 0.6 n[t-1] + 0.8 z_t`` with ``z ~ N(0, 1)`` (unit variance; neighbouring
   frames correlate, so a contiguous dropped stretch costs more than as many
   scattered frames).

   ======  ===  ====  =====  =====
   m       D_m  a_m   b_m    sigma
   ======  ===  ====  =====  =====
   text    16   1.0   0.3    0.8
   audio   12   0.5   1.0    1.2
   vision  10   0.3   0.8    1.5
   ======  ===  ====  =====  =====

What is known by construction
-----------------------------
- Signal about ``y``: each e_m correlates 0.8 with u over the population, so
  strength is set by a_m and sigma_m; a linear probe on mean-pooled features
  orders the modalities text > audio > vision.
- Cross-modal relation of the expressed sentiment, per regime:

  ================  =========  =========  ======
  pair              congruent  sarcastic  masked
  ================  =========  =========  ======
  text - audio      +1         -1         0
  text - vision     +1         -1         0
  audio - vision    +1         +1         +1
  ================  =========  =========  ======

  On top of that, ``s`` ties audio and vision strongly (b = 1.0, 0.8) and text
  weakly (b = 0.3).
- Hence a modality imagined with the population mapping is faithful in
  ``congruent`` samples, sign-wrong between text and audio/vision in
  ``sarcastic`` ones, unrelated between text and audio/vision in ``masked``
  ones, and faithful between audio and vision in every regime: imagining can
  help some samples and hurt others. The regime is a threshold on ``s``, so an
  evaluator can tell the cases apart from the available modalities: best from
  audio, then vision, least reliably from text alone (b = 0.3).
- Recalled text, the side channel: each sample also carries a recalled text sequence
  (what a live session has from an earlier window when the current text is late). With
  probability ``q ~ Uniform(0, 1)`` it is faithful (the sample's own text frames with fresh
  noise and length), else it belongs to another sentence (text frames of an independent
  label and style). ``q`` is observable: it is the ``recall_continues`` quality signal.
  So imagining the missing text from the recall helps some samples and hurts others, and
  the evaluator can tell which from ``q`` and the available modalities; an oracle that
  knows the draw has a known margin over always and never imagine. These draws come from
  their own generator, so the rest of a split is the same with or without them.
- The regime is recorded in each sample id (``syn-<split>-<index>-<regime>``,
  read it with `regime_of`) so results can be broken down by it; models never
  see ids.
"""

from __future__ import annotations

import numpy as np

from ..model.types import MODALITIES, QUALITY_SIGNALS
from .datasets import MultimodalDataset, Sample

WORLD_SEED = 20_240_611
DIMS = {"text": 16, "audio": 12, "vision": 10}
SIGNAL = {"text": 1.0, "audio": 0.5, "vision": 0.3}
STYLE = {"text": 0.3, "audio": 1.0, "vision": 0.8}
NOISE = {"text": 0.8, "audio": 1.2, "vision": 1.5}
MIN_LEN, MAX_LEN = 8, 40
AR_COEF = 0.6
SARCASTIC_ABOVE = 1.2816  # standard normal 90th percentile
MASKED_BELOW = -0.8416  # standard normal 20th percentile
REGIMES = ("congruent", "sarcastic", "masked")
SPLITS = ("train", "valid", "test")


def _directions() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fixed orthonormal (sentiment, style) directions per modality: the task, not the data."""
    rng = np.random.default_rng(WORLD_SEED)
    out = {}
    for m in MODALITIES:
        q, _ = np.linalg.qr(rng.standard_normal((DIMS[m], 2)))
        out[m] = (q[:, 0], q[:, 1])
    return out


def _split(n: int, split: str, seed: int) -> MultimodalDataset:
    """Draw one split; its generator depends on (seed, split) only, not on other splits' sizes."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    y = rng.uniform(-3.0, 3.0, n)
    u = y / np.sqrt(3.0)
    s = rng.standard_normal(n)
    xi = rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), n)
    regime = np.where(s > SARCASTIC_ABOVE, 1, np.where(s < MASKED_BELOW, 2, 0))
    expressed = {
        "text": np.where(regime == 1, -u, u),
        "audio": np.where(regime == 2, xi, u),
        "vision": np.where(regime == 2, xi, u),
    }
    directions = _directions()
    frames: dict[str, list[np.ndarray]] = {}
    for m in MODALITIES:
        lengths = rng.integers(MIN_LEN, MAX_LEN + 1, n)
        z = rng.standard_normal((n, MAX_LEN, DIMS[m]))
        noise = np.empty_like(z)
        noise[:, 0] = z[:, 0]
        for t in range(1, MAX_LEN):
            noise[:, t] = AR_COEF * noise[:, t - 1] + np.sqrt(1 - AR_COEF**2) * z[:, t]
        d, g = directions[m]
        x = (
            SIGNAL[m] * expressed[m][:, None, None] * d
            + STYLE[m] * s[:, None, None] * g
            + NOISE[m] * noise
        ).astype(np.float32)
        frames[m] = [x[i, : lengths[i]] for i in range(n)]
    recalled, quality = _recall(n, split, seed, expressed["text"], s, directions["text"])
    samples = [
        Sample(
            id=f"syn-{split}-{i:05d}-{REGIMES[regime[i]]}",
            label=float(y[i]),
            features={m: frames[m][i] for m in MODALITIES},
            recalled=recalled[i],
            quality=quality[i],
        )
        for i in range(n)
    ]
    return MultimodalDataset(samples, DIMS, name=f"synthetic:{split}")


def _text_frames(
    rng: np.random.Generator, expressed: np.ndarray, style: np.ndarray, d: np.ndarray, g: np.ndarray
) -> list[np.ndarray]:
    """Text frames (step 7 of the process) for the given expressed sentiment and style."""
    n, dim = len(expressed), DIMS["text"]
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, n)
    z = rng.standard_normal((n, MAX_LEN, dim))
    noise = np.empty_like(z)
    noise[:, 0] = z[:, 0]
    for t in range(1, MAX_LEN):
        noise[:, t] = AR_COEF * noise[:, t - 1] + np.sqrt(1 - AR_COEF**2) * z[:, t]
    x = (
        SIGNAL["text"] * expressed[:, None, None] * d
        + STYLE["text"] * style[:, None, None] * g
        + NOISE["text"] * noise
    ).astype(np.float32)
    return [x[i, : lengths[i]] for i in range(n)]


def _recall(
    n: int,
    split: str,
    seed: int,
    expressed: np.ndarray,
    style: np.ndarray,
    directions: tuple[np.ndarray, np.ndarray],
) -> tuple[list[np.ndarray], np.ndarray]:
    """Recalled text and quality signals per sample (module docstring, side channel)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 1])
    q = rng.uniform(0.0, 1.0, n)
    faithful = rng.uniform(0.0, 1.0, n) < q
    other = rng.uniform(-1.0, 1.0, n) * np.sqrt(3.0)
    d, g = directions
    frames = _text_frames(
        rng,
        np.where(faithful, expressed, other),
        np.where(faithful, style, rng.standard_normal(n)),
        d,
        g,
    )
    quality = np.zeros((n, len(QUALITY_SIGNALS)), np.float32)
    quality[:, QUALITY_SIGNALS.index("recall_continues")] = q
    return frames, quality


def make_synthetic(
    n_train: int = 2000, n_valid: int = 500, n_test: int = 500, seed: int = 0
) -> dict[str, MultimodalDataset]:
    """Train/valid/test splits of the benchmark; identical for identical arguments."""
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    return {split: _split(sizes[split], split, seed) for split in SPLITS}


def regime_of(sample_id: str) -> str:
    """The hidden regime of a synthetic sample, for per-regime breakdowns of results."""
    regime = sample_id.rsplit("-", 1)[-1]
    if not sample_id.startswith("syn-") or regime not in REGIMES:
        raise ValueError(f"{sample_id!r} is not a synthetic sample id")
    return regime
