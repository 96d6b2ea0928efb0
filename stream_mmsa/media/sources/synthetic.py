"""Deterministic test media: tones, noise or given samples, and solid colours or given images.

Gaps (stretches in which a stream sends nothing, like a dropped camera or lost packets)
let tests drive the `missing` paths of extractors and the aligner without real devices.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import AsyncIterator, Iterator, Sequence

import numpy as np

from ..frames import AUDIO_RATE, AudioChunk, Frame, VideoFrame
from .base import Source
from .pacing import Pacer, arrival

Gaps = Sequence[tuple[float, float]]


def _in_gap(time: float, gaps: Gaps) -> bool:
    return any(start <= time < end for start, end in gaps)


class SyntheticSource(Source):
    """`duration` seconds of audio and/or video on a clock starting at 0.

    audio: "tone" (sine at `tone_hz`), "noise" (uniform, seeded), "silence", samples at
        16 kHz (cut or padded with silence to `duration`), or None for no audio stream.
    video: an RGB colour (drawn at `size`, (height, width)), one image, a sequence of
        images shown in turn, or None for no video stream.
    audio_gaps / video_gaps: (start, end) stretches in which that stream sends nothing.
    """

    def __init__(
        self,
        duration: float,
        *,
        audio: str | np.ndarray | None = "tone",
        video: tuple[int, int, int] | np.ndarray | Sequence[np.ndarray] | None = (128, 128, 128),
        tone_hz: float = 220.0,
        amplitude: float = 0.3,
        fps: float = 10.0,
        size: tuple[int, int] = (240, 320),
        chunk_ms: float = 20.0,
        audio_gaps: Gaps = (),
        video_gaps: Gaps = (),
        realtime: bool = False,
        seed: int = 0,
    ) -> None:
        self.name = "synthetic"
        self.duration = duration
        self.has_audio = audio is not None
        self.has_video = video is not None
        self._samples = self._make_audio(audio, tone_hz, amplitude, seed)
        if isinstance(video, tuple):
            self._images = [np.full((*size, 3), video, dtype=np.uint8)]
        elif isinstance(video, np.ndarray):
            self._images = [video]
        else:
            self._images = list(video or [])
            if self.has_video and not self._images:
                raise ValueError("video needs a colour, an image or a non-empty list of images")
        self._fps = fps
        self._chunk = max(1, round(AUDIO_RATE * chunk_ms / 1000))
        self._audio_gaps = audio_gaps
        self._video_gaps = video_gaps
        self._realtime = realtime

    def _make_audio(
        self, audio: str | np.ndarray | None, tone_hz: float, amplitude: float, seed: int
    ) -> np.ndarray:
        n = round(self.duration * AUDIO_RATE)
        if isinstance(audio, np.ndarray):
            out = np.zeros(n, dtype=np.float32)
            given = audio[:n].astype(np.float32)
            out[: len(given)] = given
            return out
        if audio in (None, "silence"):
            return np.zeros(n, dtype=np.float32)
        if audio == "tone":
            wave = amplitude * np.sin(2 * np.pi * tone_hz * np.arange(n) / AUDIO_RATE)
            return wave.astype(np.float32)
        if audio == "noise":
            return np.random.default_rng(seed).uniform(-amplitude, amplitude, n).astype(np.float32)
        raise ValueError(f"audio must be tone, noise, silence, samples or None, not {audio!r}")

    def _audio(self) -> Iterator[AudioChunk]:
        if not self.has_audio:
            return
        for start in range(0, len(self._samples), self._chunk):
            time = start / AUDIO_RATE
            if not _in_gap(time, self._audio_gaps):
                yield AudioChunk(self._samples[start : start + self._chunk], time)

    def _video(self) -> Iterator[VideoFrame]:
        if not self.has_video:
            return
        for index in range(math.ceil(self.duration * self._fps - 1e-9)):  # times < duration
            time = index / self._fps
            if not _in_gap(time, self._video_gaps):
                yield VideoFrame(self._images[index % len(self._images)], time)

    async def frames(self) -> AsyncIterator[Frame]:
        pacer = Pacer(self._realtime, self.origin)
        for frame in heapq.merge(self._audio(), self._video(), key=arrival):
            await pacer.wait(frame)
            yield frame
