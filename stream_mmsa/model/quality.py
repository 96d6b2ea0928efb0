"""The evaluator's quality signals, computed one way for live windows and training data.

The names and meaning are `types.QUALITY_SIGNALS`; this module is the only place that
turns what a stream knows (word counts, how old the recalled text is, whether a pause
started a new utterance since) into the (len(QUALITY_SIGNALS),) vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import QUALITY_SIGNALS

AGE_SCALE_S = 10.0
"""Recalled text this old (s) or older reads as 1: nothing that old still describes now."""
WORD_SCALE = 16.0
"""Word counts are divided by this and capped at 1 (a 4 s window holds about 10 words)."""


@dataclass(frozen=True)
class Recall:
    """The latest text a stream had: its token states, its window's end, its words."""

    states: np.ndarray
    end: float
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


def quality_signals(words: int, now: float, recall: Recall | None, continues: bool) -> np.ndarray:
    """The signals for a window ending at `now` with `words` words of its own text."""
    age = 0.0 if recall is None else min((now - recall.end) / AGE_SCALE_S, 1.0)
    values = {
        "recall_age": max(age, 0.0),
        "recall_continues": float(recall is not None and continues),
        "words": min(words / WORD_SCALE, 1.0),
        "recall_words": 0.0 if recall is None else min(recall.words / WORD_SCALE, 1.0),
    }
    return np.array([values[k] for k in QUALITY_SIGNALS], dtype=np.float32)
