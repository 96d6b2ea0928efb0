"""The one interface every streaming extractor implements: frames in, updates out, close.

An extractor turns frames of one stream (audio or video) into timestamped feature vectors
for one modality. It also reports a watermark: the session time up to which it has
looked at its input. The aligner uses the watermark to tell `late` (not yet
processed) from `missing` (processed, nothing there: no face, silence).

The session builds its extractors from a list (stream_mmsa/extractors.py) and drives
every one the same way, so adding one is a class and a line in that list.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..media.frames import AudioChunk, Frame, VideoFrame

if TYPE_CHECKING:
    from .asr.types import TranscriptUpdate

Stream = Literal["audio", "video"]
"""The source streams there are; each extractor reads one."""
_FRAMES: dict[Stream, type] = {"audio": AudioChunk, "video": VideoFrame}


def frame_end(frame: Frame) -> float:
    """Session time up to which `frame` carries media: a chunk's end, a video frame's instant."""
    return frame.end if isinstance(frame, AudioChunk) else frame.time


@dataclass(frozen=True, slots=True)
class FeatureVector:
    """One feature vector covering [start, end] on the session clock.

    extra: what the extractor saw there beside the model's input (vision: the face's
    expression probabilities), carried through the windows to the events; None if nothing.
    """

    start: float
    end: float
    vector: np.ndarray
    extra: np.ndarray | None = None


@dataclass(slots=True)
class FeatureUpdate:
    """What one extractor call produced.

    vectors:   new feature vectors, in time order.
    watermark: all input before this session time has been processed.
    absent:    (start, end, reason) stretches processed and found empty, e.g. "no face".
    transcript: a recogniser's words behind the vectors, for the session's transcript
               events and the windows' text; None from extractors that hear no words.
    """

    modality: str
    vectors: list[FeatureVector] = field(default_factory=list)
    watermark: float = 0.0
    absent: list[tuple[float, float, str]] = field(default_factory=list)
    transcript: TranscriptUpdate | None = None


@dataclass(frozen=True, slots=True)
class Backlog:
    """An extractor too slow to await in the pump runs on its own task behind a queue of
    `frames`; in real time the oldest frame beyond that is dropped and counted in the
    session summary as `dropped_as`, offline the pump waits for room."""

    frames: int
    dropped_as: str


class Extractor(ABC):
    """Frames in, feature updates out, then close; heavy work runs off the event loop.

    The session pushes every frame it `accepts` (by default: the frames of `stream`),
    flushes once at the end of input and always closes. `backlog` set: the session runs
    it on a task of its own (the recogniser); None: each push is awaited in the pump.
    """

    modality: str
    dim: int
    stream: Stream
    backlog: Backlog | None = None

    def accepts(self, frame: Frame) -> bool:
        """Whether this extractor consumes this frame."""
        return isinstance(frame, _FRAMES[self.stream])

    @abstractmethod
    async def push(self, frame: Frame) -> FeatureUpdate:
        """Consume one frame; may return nothing new while it buffers."""

    @abstractmethod
    async def flush(self) -> FeatureUpdate:
        """End of input: process what is buffered and return the rest."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most extractors hold nothing
        """Release models and threads."""

    def losses(self) -> dict[str, float]:
        """Input it had to leave out so far, by name, for the session summary."""
        return {}
