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
class SpeechFrames:
    """Speech probabilities of consecutive VAD frames on a grid starting at `origin`.

    Frame `first + i` covers [origin + (first + i) * frame_s, origin + (first + i + 1) *
    frame_s): times are counted in frames from the grid's origin, so they never drift.
    """

    probs: np.ndarray
    origin: float
    first: int
    frame_s: float

    def ends(self) -> np.ndarray:
        """Session time at which each frame ends."""
        return self.origin + np.arange(self.first + 1, self.first + len(self.probs) + 1) * (
            self.frame_s
        )


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mono float32 samples in [-1, 1] at AUDIO_RATE, starting at `time`.

    `speech`: the VAD frames this chunk completes, set by the session's one VAD
    (features/vad.py) so that ASR and acoustic features share it instead of each running one.
    """

    samples: np.ndarray
    time: float
    sample_rate: int = AUDIO_RATE
    speech: SpeechFrames | None = None

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
