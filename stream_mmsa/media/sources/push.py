"""A source fed from your own code: audio and video frames pushed as numpy arrays.

For media the engine cannot open itself (a call SDK, a capture callback, a decoder of
your own). Times are seconds on the session clock, which starts when the source is
made: leave `t` out for live media (stamped on arrival, like WebRTC tracks) or give the
media's own times. Audio is resampled to 16 kHz mono with state kept between pushes, so
chunk edges leave no clicks; when the engine falls behind, the oldest audio is dropped
and counted in `losses()` rather than memory growing. Video has latest-frame semantics,
so a slow face model never builds up delay. Call the push methods from the event loop's
thread (from a device callback thread, through `loop.call_soon_threadsafe`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

import av
import numpy as np

from ..frames import AUDIO_RATE, AudioChunk, Frame, VideoFrame
from .base import RESYNC_S, Source

MIN_RATE, MAX_RATE = 8_000, 192_000
"""Sample rates push_audio takes: telephone audio up to studio capture."""

CHUNK = AUDIO_RATE // 25
"""Pushed audio reaches the engine in chunks of at most 40 ms (as files do), so a long push
neither delays the extractors nor makes dropping coarse."""

JITTER_S = 0.05
"""Explicit audio times within this of where the previous push ended continue its sample
clock (timestamp jitter); further ahead is a gap, further back an error."""


def _mono(pcm: np.ndarray) -> np.ndarray:
    """float32 mono in [-1, 1] from int16 or float mono (n,) or (n, channels) samples."""
    pcm = np.asarray(pcm)
    if pcm.dtype == np.int16:
        pcm = pcm.astype(np.float32) / 32768.0
    elif pcm.dtype in (np.float32, np.float64):
        pcm = pcm.astype(np.float32, copy=False)
    else:
        raise ValueError(f"audio must be int16 or float32 samples, not {pcm.dtype}")
    if pcm.ndim == 2 and pcm.shape[1] in (1, 2):
        return pcm.mean(axis=1, dtype=np.float32)
    if pcm.ndim != 1:
        raise ValueError(f"audio must be (samples,) or (samples, 1 or 2 channels), not {pcm.shape}")
    return pcm


class PushSource(Source):
    """Frames you push: `push_audio`, `push_video`, then `end()`; declare the streams first.

    `max_buffer_s`: seconds of audio held for an engine that falls behind before the oldest
    is dropped (counted as `audio_dropped_s` in `losses()`).
    """

    def __init__(
        self,
        *,
        audio: bool = False,
        video: bool = False,
        name: str = "push",
        max_buffer_s: float = 10.0,
    ) -> None:
        if not (audio or video):
            raise ValueError("declare what you will push: PushSource(audio=True, video=True)")
        if max_buffer_s <= 0:
            raise ValueError(f"max_buffer_s must be positive, not {max_buffer_s}")
        self.name = name
        self.has_audio = audio
        self.has_video = video
        self.origin = time.monotonic()
        self._max_samples = round(max_buffer_s * AUDIO_RATE)
        self._audio: deque[AudioChunk] = deque()
        self._buffered = 0  # samples in self._audio
        self._dropped = 0  # samples dropped from it
        self._video: VideoFrame | None = None
        self._video_time = -np.inf
        self._ended = False
        self._wakeup = asyncio.Event()
        # The current audio grid: one stretch of continuous input at one rate.
        self._rate: int | None = None
        self._resampler: av.AudioResampler | None = None
        self._anchor = 0.0  # session time of the grid's first sample
        self._taken = 0  # input samples on the grid
        self._given = 0  # 16 kHz samples made from them

    def now(self) -> float:
        """Seconds on the session clock (since the source was made)."""
        return time.monotonic() - self.origin

    def losses(self) -> dict[str, float]:
        return {"audio_dropped_s": self._dropped / AUDIO_RATE}

    def push_audio(self, pcm: np.ndarray, sample_rate: int, t: float | None = None) -> None:
        """Add samples (int16 or float32; mono, or stereo as (samples, 2)) at any rate.

        `t`: session time of the first sample; None stamps them on arrival (the last
        sample is now) and keeps counting samples while the pushes keep up.
        """
        self._check_open("audio", self.has_audio)
        if not MIN_RATE <= sample_rate <= MAX_RATE or int(sample_rate) != sample_rate:
            raise ValueError(f"sample_rate must be an integer in {MIN_RATE}…{MAX_RATE} Hz")
        samples = _mono(pcm)
        if not len(samples):
            return
        rate = int(sample_rate)
        arrived = t is None
        if t is None:
            t = max(self.now() - len(samples) / rate, 0.0)
        elif t < 0:
            raise ValueError(f"audio time {t} is before the session started (0)")
        if self._rate is None:
            self._restart(rate, t)
        else:
            end = self._anchor + self._taken / self._rate
            if not arrived and t < end - JITTER_S:
                raise ValueError(
                    f"audio time {t:.3f} goes back before the last push's end {end:.3f}"
                )
            gap = t - end > (RESYNC_S if arrived else JITTER_S)
            if gap or rate != self._rate:
                self._restart(rate, t if gap else end)
        self._taken += len(samples)
        frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
        frame.sample_rate = rate
        self._resample(frame)

    def push_video(self, rgb: np.ndarray, t: float | None = None) -> None:
        """Show one RGB uint8 image (H, W, 3); an image not yet taken is replaced."""
        self._check_open("video", self.has_video)
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"video must be RGB uint8 (H, W, 3), not {rgb.dtype} {rgb.shape}")
        t = self.now() if t is None else t
        if t < 0:
            raise ValueError(f"video time {t} is before the session started (0)")
        if t < self._video_time:
            raise ValueError(
                f"video time {t:.3f} goes back before the last frame's {self._video_time:.3f}"
            )
        self._video_time = t
        self._video = VideoFrame(rgb, t)
        self._wakeup.set()

    def end(self) -> None:
        """No more media: what was pushed is analysed, then the session ends."""
        if not self._ended:
            self._flush()
            self._ended = True
            self._wakeup.set()

    async def frames(self) -> AsyncIterator[Frame]:
        while True:
            while self._audio:
                chunk = self._audio.popleft()
                self._buffered -= len(chunk.samples)
                yield chunk
            if self._video is not None:
                frame, self._video = self._video, None
                yield frame
                continue
            if self._ended:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    async def close(self) -> None:
        self.end()

    def _check_open(self, kind: str, declared: bool) -> None:
        if not declared:
            raise ValueError(f"this source was made without {kind}: PushSource({kind}=True)")
        if self._ended:
            raise RuntimeError(f"push_{kind} after end()")

    def _restart(self, rate: int, at: float) -> None:
        """Start a new grid at session time `at`: the rate changed or the audio has a gap."""
        self._flush()
        self._rate, self._anchor, self._taken, self._given = rate, at, 0, 0
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)

    def _flush(self) -> None:
        """The samples the resampler still holds (its filter delay) end the current grid."""
        if self._resampler is not None:
            self._resample(None)
            self._resampler = None

    def _resample(self, frame: av.AudioFrame | None) -> None:
        assert self._resampler is not None
        for out in self._resampler.resample(frame):
            data = out.to_ndarray()[0]
            for start in range(0, len(data), CHUNK):
                time_ = self._anchor + (self._given + start) / AUDIO_RATE
                self._append(AudioChunk(data[start : start + CHUNK], time_))
            self._given += len(data)

    def _append(self, chunk: AudioChunk) -> None:
        self._audio.append(chunk)
        self._buffered += len(chunk.samples)
        while self._buffered > self._max_samples:
            dropped = self._audio.popleft()
            self._buffered -= len(dropped.samples)
            self._dropped += len(dropped.samples)
        self._wakeup.set()
