"""Media frames on the session clock.

Every frame carries `time`, seconds on its session's clock: sources map their
own timestamps (file pts, RTP, device clocks) onto it, so nothing downstream
ever compares clocks from different origins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUDIO_RATE = 16_000
"""Sample rate every extractor receives; sources resample to it."""


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mono float32 samples in [-1, 1] at AUDIO_RATE, starting at `time`."""

    samples: np.ndarray
    time: float
    sample_rate: int = AUDIO_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def end(self) -> float:
        return self.time + self.duration


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """An RGB uint8 image (H, W, 3) captured at `time`."""

    image: np.ndarray
    time: float


Frame = AudioChunk | VideoFrame
