"""The one interface every media source implements (file, synthetic, webcam, mic, WebRTC)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from ..frames import Frame

RESYNC_S = 0.3
"""Live audio is stamped on arrival but keeps its own sample count between arrivals, so
jitter does not bend the waveform; once that count falls this far behind arrival the
sender paused (packet loss, a muted microphone) and the clock is re-anchored."""


class SourceError(RuntimeError):
    """A source that cannot be opened or read, naming which one and why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class Source(ABC):
    """Yields audio chunks and video frames stamped on the session clock, in time order.

    `has_audio` / `has_video` are known once the source is open; an absent stream
    is reported by the engine as a `missing` modality, never as an error.
    """

    name: str
    has_audio: bool
    has_video: bool
    ended_because: str | None = None
    """Why a live source ended (the peer left, no media), for the session's last event."""
    origin: float | None = None
    """time.monotonic() at session time 0. Live sources set it and stamp frames as they
    arrive; recorded media leave it None, the session sets it as it starts, and real-time
    recorded sources deliver each frame at origin + its arrival time (pacing.Pacer)."""

    @abstractmethod
    def frames(self) -> AsyncIterator[Frame]:
        """Frames until the source ends; raising means the source failed."""

    def stopped_streams(self) -> dict[str, tuple[float, str]]:
        """Streams ("audio", "video") that ended for good while the source goes on (a
        camera unplugged): session time and why. The engine reports them `missing`."""
        return {}

    def losses(self) -> dict[str, float]:
        """Media lost so far by name (undecodable packets, dropped chunks); grows only."""
        return {}

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release devices, files and connections."""
