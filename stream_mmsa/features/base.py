"""The one interface every feature extractor implements.

An extractor turns frames of one kind into timestamped feature vectors for one
modality. It also reports a watermark: the session time up to which it has
looked at its input. The aligner uses the watermark to tell `late` (not yet
processed) from `missing` (processed, nothing there: no face, silence).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ..media.frames import Frame


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
    """

    modality: str
    vectors: list[FeatureVector] = field(default_factory=list)
    watermark: float = 0.0
    absent: list[tuple[float, float, str]] = field(default_factory=list)


class Extractor(ABC):
    """Frames in, feature vectors out; heavy work runs off the event loop."""

    modality: str
    dim: int

    @abstractmethod
    def accepts(self, frame: Frame) -> bool:
        """Whether this extractor consumes this kind of frame."""

    @abstractmethod
    async def push(self, frame: Frame) -> FeatureUpdate:
        """Consume one frame; may return nothing new while it buffers."""

    @abstractmethod
    async def flush(self) -> FeatureUpdate:
        """End of input: process what is buffered and return the rest."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most extractors hold nothing
        """Release models and threads."""
