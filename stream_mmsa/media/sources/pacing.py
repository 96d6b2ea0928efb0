"""Live-device timing for recorded media (files, synthetic streams).

Recorded sources hand frames over when a camera and microphone would have: a video
frame when it is captured, an audio chunk once its last sample is. In real-time mode
they also wait for that moment on the wall clock, so the engine's deadlines see the
same timing as with live devices.
"""

from __future__ import annotations

import asyncio
import time

from ..frames import AudioChunk, Frame


def arrival(frame: Frame) -> float:
    """Session time at which a live device would deliver `frame`; sources sort by it."""
    return frame.end if isinstance(frame, AudioChunk) else frame.time


class Pacer:
    """Waits until each frame's arrival on a wall clock starting at `origin`.

    `origin`: time.monotonic() at session time 0, the session's own clock (Source.origin),
    so frames reach the engine exactly when its windows expect them, however long opening
    the media took; None: the moment the first frame is ready. With `realtime=False` it
    only yields to the event loop, so a fast source never starves the tasks that consume it.
    """

    def __init__(self, realtime: bool, origin: float | None = None) -> None:
        self.realtime = realtime
        self._origin = origin

    async def wait(self, frame: Frame) -> None:
        if not self.realtime:
            await asyncio.sleep(0)
            return
        if self._origin is None:
            self._origin = time.monotonic()
        await asyncio.sleep(max(0.0, self._origin + arrival(frame) - time.monotonic()))
