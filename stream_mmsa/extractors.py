"""Which extractors a session runs, built from the engine config, and how each is fed.

`EXTRACTORS` is the list: one factory per extractor, so adding one is a class under
features/ and a line here (or a longer list handed to `Session`). A `Feed` drives one
extractor for the session: inline, each push awaited by the pump, or, for an extractor
that declares a `Backlog` (the recogniser), on its own task behind a bounded queue, so
that a slow decode never holds up the face, the acoustic features or the window cadence.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from .config import EngineConfig
from .features.acoustic import AcousticExtractor
from .features.asr import AsrConfig, WhisperAsr
from .features.base import Backlog, Extractor, FeatureUpdate, Stream, frame_end
from .features.face import FaceExtractor
from .features.transcript import TranscriptExtractor
from .media.frames import Frame


@dataclass(frozen=True, slots=True)
class ExtractorContext:
    """What a factory builds from: the engine config, the shared models and the pace
    (`realtime`: live media, or a file as fast as possible with the same result anywhere)."""

    config: EngineConfig
    asr_model: WhisperAsr
    realtime: bool


ExtractorFactory = Callable[[ExtractorContext], Extractor]


def reads(stream: Stream) -> Callable[[ExtractorFactory], ExtractorFactory]:
    """Marks a factory with the stream its extractor reads, so that a session whose source
    lacks that stream never builds it: an audio-only call loads no face models."""

    def mark(factory: ExtractorFactory) -> ExtractorFactory:
        factory.stream = stream  # type: ignore[attr-defined]
        return factory

    return mark


def needed(factory: ExtractorFactory, streams: Mapping[Stream, bool]) -> bool:
    """Whether a session with these source streams builds the factory (unmarked: always)."""
    stream = getattr(factory, "stream", None)
    return stream is None or streams[stream]


@reads("audio")
def acoustic(context: ExtractorContext) -> Extractor:
    """Speech probabilities come with the chunks, from the session's one VAD."""
    return AcousticExtractor()


@reads("video")
def face(context: ExtractorContext) -> Extractor:
    """Offline, every frame at the full rate waits for its analysis: no drops, any machine."""
    config = context.config
    return FaceExtractor(
        max_fps=config.face_max_fps,
        adaptive=context.realtime,
        wait=not context.realtime,
        expression=config.face_expression,
        runtime=config.face_runtime,
    )


def transcript_config(config: EngineConfig, realtime: bool) -> AsrConfig:
    """The recogniser's settings: real time skips audio it cannot catch up with (more than
    8 s behind); offline it decodes it all."""
    return AsrConfig(
        model=config.asr_model,
        step_s=config.asr_step_s,
        beam_size=config.asr_beam_size,
        max_pending_s=8.0 if realtime else None,
    )


@reads("audio")
def transcript(context: ExtractorContext) -> Extractor:
    config = transcript_config(context.config, context.realtime)
    return TranscriptExtractor(context.asr_model, config, final_watermark=not context.realtime)


EXTRACTORS: tuple[ExtractorFactory, ...] = (acoustic, face, transcript)
"""A session's extractors, in the order they take each frame and are flushed at the end."""


Deliver = Callable[[FeatureUpdate, float], Awaitable[None]]
"""Where a feed's updates go, with the session time its input reached (inf after flush)."""


class Feed:
    """Drives one extractor inline: the pump awaits each push, the update goes out at once."""

    def __init__(self, extractor: Extractor, deliver: Deliver) -> None:
        self.extractor = extractor
        self._deliver = deliver

    def start(self, tasks: asyncio.TaskGroup) -> None:
        """Start the feed's own work under the session's supervision; inline has none."""

    async def push(self, frame: Frame) -> None:
        await self._deliver(await self.extractor.push(frame), frame_end(frame))

    async def finish(self) -> None:
        """End of input: the extractor's last updates are delivered when this returns."""
        await self._deliver(await self.extractor.flush(), math.inf)

    def losses(self) -> dict[str, float]:
        """Frames the feed dropped before the extractor saw them, by name."""
        return {}


class QueuedFeed(Feed):
    """Drives one extractor on its own task behind a bounded queue.

    Real time never waits for it: when the queue is full the oldest frame goes and is
    counted. Offline the pump waits for room (back-pressure on the file), so nothing goes.
    """

    def __init__(
        self, extractor: Extractor, deliver: Deliver, backlog: Backlog, realtime: bool
    ) -> None:
        super().__init__(extractor, deliver)
        self.backlog = backlog
        self.realtime = realtime
        self.dropped = 0
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue(backlog.frames)
        self._task: asyncio.Task[None] | None = None

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._task = tasks.create_task(self._run())

    async def push(self, frame: Frame) -> None:
        if not self.realtime:
            await self._queue.put(frame)
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(frame)

    async def finish(self) -> None:
        """Wait until every queued frame is through and the extractor is flushed."""
        assert self._task is not None, "start() the feed first"
        await self._queue.put(None)
        await self._task

    def losses(self) -> dict[str, float]:
        return {self.backlog.dropped_as: float(self.dropped)}

    async def _run(self) -> None:
        while (frame := await self._queue.get()) is not None:
            await super().push(frame)
        await super().finish()


def feed(extractor: Extractor, deliver: Deliver, *, realtime: bool) -> Feed:
    """The feed `extractor` asks for: its own task if it declares a backlog, else inline."""
    if extractor.backlog is None:
        return Feed(extractor, deliver)
    return QueuedFeed(extractor, deliver, extractor.backlog, realtime)
