"""WebRTC tracks as an engine source: stamped on the session clock by arrival time.

Why arrival time: a peer's audio and video RTP clocks start at independent random
offsets, so their timestamps cannot be compared; the moment a frame reaches us can.
Audio keeps its own sample count between arrivals (jitter does not bend the waveform)
and is re-anchored only when it falls behind arrival, i.e. after a gap (packet loss, a
muted microphone). Video has latest-frame semantics: frames that arrive while the
engine is busy replace each other, so a slow face model never builds up delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ...media.frames import AUDIO_RATE, AudioChunk, Frame, VideoFrame
from ...media.sources.base import RESYNC_S, Source

log = logging.getLogger(__name__)

MAX_AUDIO_BACKLOG = 500
"""Audio chunks (10 s at 20 ms) held for a stalled consumer before the oldest are dropped."""


@dataclass
class TrackStats:
    """What the source had to throw away, for metrics and the session summary."""

    video_frames: int = 0
    video_replaced: int = 0
    audio_chunks: int = 0
    audio_dropped: int = 0
    audio_resyncs: int = 0

    def add(self, other: TrackStats) -> None:
        """Count `other`'s frames into these (totals over sessions)."""
        for key, value in vars(other).items():
            setattr(self, key, getattr(self, key) + value)


class TrackSource(Source):
    """Frames from a peer's audio and/or video track until both end or media stops.

    `idle_timeout`: seconds without any frame after which the source ends (a vanished
    peer stops sending long before ICE consent freshness notices). `stop()` ends it
    from outside, e.g. when the peer connection fails.
    """

    def __init__(
        self, tracks: Iterable[MediaStreamTrack], *, name: str, idle_timeout: float = 10.0
    ) -> None:
        by_kind = {track.kind: track for track in tracks}
        self.name = name
        self.audio_track = by_kind.get("audio")
        self.video_track = by_kind.get("video")
        self.has_audio = self.audio_track is not None
        self.has_video = self.video_track is not None
        if not (self.has_audio or self.has_video):
            raise ValueError("a TrackSource needs an audio or a video track")
        self.idle_timeout = idle_timeout
        self.origin = time.monotonic()
        self.stats = TrackStats()
        self.ended_because: str | None = None
        self._audio: deque[AudioChunk] = deque()
        self._video: av.VideoFrame | None = None
        self._video_time = 0.0
        self._wakeup = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []
        self._live = 0

    @property
    def backlog(self) -> int:
        """Audio chunks received and not yet taken by the engine."""
        return len(self._audio)

    def losses(self) -> dict[str, float]:
        return {"audio_chunks_dropped": self.stats.audio_dropped}

    def now(self) -> float:
        """Seconds on the session clock."""
        return time.monotonic() - self.origin

    def stop(self, reason: str) -> None:
        """End the source (the peer left, failed or misbehaved); frames already in are kept."""
        if self.ended_because is None:
            self.ended_because = reason
        self._wakeup.set()

    async def frames(self) -> AsyncIterator[Frame]:
        for track, read in (
            (self.audio_track, self._read_audio),
            (self.video_track, self._read_video),
        ):
            if track is not None:
                self._live += 1
                self._readers.append(asyncio.create_task(self._guard(track.kind, read(track))))
        while True:
            while self._audio:
                yield self._audio.popleft()
            if self._video is not None:
                frame, self._video = self._video, None
                yield VideoFrame(frame.to_ndarray(format="rgb24"), self._video_time)
                continue
            if self.ended_because is not None:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.idle_timeout)
            except TimeoutError:
                self.stop(f"no media for {self.idle_timeout:g} s")

    async def close(self) -> None:
        self.stop("closed")
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for track in (self.audio_track, self.video_track):
            if track is not None:
                track.stop()

    async def _guard(self, kind: str, reader: Coroutine[None, None, None]) -> None:
        """Run one track's reader; the source ends when its last track does.

        A track that fails (e.g. media PyAV cannot convert) ends alone: the session goes
        on with the other, and reports this modality missing.
        """
        try:
            await reader
        except MediaStreamError:
            pass
        except Exception:
            log.warning(
                "%s: %s track failed; continuing without it", self.name, kind, exc_info=True
            )
        self._live -= 1
        if self._live == 0:
            self.stop("tracks ended")

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        anchor: float | None = None  # session time of the first sample on the current grid
        samples = 0
        while True:
            frame = await track.recv()
            arrived = self.now()
            frame.pts = None  # RTP timing is replaced by arrival time
            for out in resampler.resample(frame):
                data = out.to_ndarray()[0]
                duration = len(data) / AUDIO_RATE
                if (
                    anchor is None
                    or arrived - (anchor + samples / AUDIO_RATE + duration) > RESYNC_S
                ):
                    if anchor is not None:
                        self.stats.audio_resyncs += 1
                    anchor, samples = arrived - duration, 0
                self._push_audio(AudioChunk(data, anchor + samples / AUDIO_RATE))
                samples += len(data)

    def _push_audio(self, chunk: AudioChunk) -> None:
        if len(self._audio) >= MAX_AUDIO_BACKLOG:
            self._audio.popleft()
            self.stats.audio_dropped += 1
        self._audio.append(chunk)
        self.stats.audio_chunks += 1
        self._wakeup.set()

    async def _read_video(self, track: MediaStreamTrack) -> None:
        while True:
            frame = await track.recv()
            self.stats.video_frames += 1
            if self._video is not None:
                self.stats.video_replaced += 1
            self._video, self._video_time = frame, self.now()
            self._wakeup.set()
