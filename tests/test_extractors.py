"""The extractor list and its feeds: a session runs what its list says, fed one way.

The feeds are checked with the real acoustic extractor; the list with a real session
(models loaded) and an extractor written here, to show that adding one is one line.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from conftest import Recorder

from stream_mmsa.config import EngineConfig
from stream_mmsa.engine import Runtime, Session
from stream_mmsa.events import SentimentEvent
from stream_mmsa.extractors import (
    EXTRACTORS,
    ExtractorContext,
    Feed,
    QueuedFeed,
    acoustic,
    face,
    feed,
    needed,
    reads,
    transcript,
)
from stream_mmsa.features.acoustic import AcousticExtractor
from stream_mmsa.features.base import Backlog, Extractor, FeatureUpdate, FeatureVector
from stream_mmsa.features.face import DIM as FACE_DIM
from stream_mmsa.media.frames import AudioChunk, Frame, VideoFrame
from stream_mmsa.media.sources.synthetic import SyntheticSource

BACKLOG = Backlog(frames=4, dropped_as="test_chunks_dropped")


def chunks(count: int) -> list[AudioChunk]:
    """`count` chunks of 40 ms of a tone, back to back from 0."""
    samples = (0.3 * np.sin(2 * np.pi * 220 * np.arange(640 * count) / 16e3)).astype(np.float32)
    return [AudioChunk(samples[i * 640 : (i + 1) * 640], i * 0.04) for i in range(count)]


Delivered = list[tuple[FeatureUpdate, float]]


def drive(
    make: type[Feed], frames: list[AudioChunk], **kwargs: object
) -> tuple[Delivered, dict[str, float]]:
    """Push every frame (a real-time push never yields to the loop, so the queue fills),
    then finish: what was delivered, and the feed's losses."""
    delivered: Delivered = []

    async def deliver(update: FeatureUpdate, heard_to: float) -> None:
        delivered.append((update, heard_to))

    async def run() -> dict[str, float]:
        extractor = AcousticExtractor()
        fed = make(extractor, deliver, **kwargs)
        async with asyncio.TaskGroup() as tasks:
            fed.start(tasks)
            for frame in frames:
                await fed.push(frame)
            await fed.finish()
        await extractor.close()
        return fed.losses()

    losses = asyncio.run(run())
    return delivered, losses


def vectors(delivered: Delivered) -> np.ndarray:
    return np.stack([v.vector for update, _ in delivered for v in update.vectors])


def test_an_extractor_without_backlog_is_fed_inline() -> None:
    async def discard(update: FeatureUpdate, heard_to: float) -> None:
        pass

    assert type(feed(AcousticExtractor(), discard, realtime=True)) is Feed
    delivered, losses = drive(Feed, chunks(10))
    times = [t for _, t in delivered]
    assert times == pytest.approx([0.04 * (i + 1) for i in range(10)] + [math.inf])
    assert losses == {}


def test_queued_feed_in_real_time_drops_the_oldest_and_counts_them() -> None:
    frames = chunks(10)
    delivered, losses = drive(QueuedFeed, frames, backlog=BACKLOG, realtime=True)
    assert losses == {"test_chunks_dropped": 6.0}
    times = [t for _, t in delivered]
    assert times == pytest.approx([f.end for f in frames[-4:]] + [math.inf])  # the newest four


def test_queued_feed_offline_waits_for_room_and_loses_nothing() -> None:
    frames = chunks(10)
    queued, losses = drive(QueuedFeed, frames, backlog=BACKLOG, realtime=False)
    inline, _ = drive(Feed, frames)
    assert losses == {"test_chunks_dropped": 0.0}
    assert [t for _, t in queued] == [t for _, t in inline]
    assert np.array_equal(vectors(queued), vectors(inline))


class MeanColour(Extractor):
    """Video frames in, a face-sized vector holding the frame's mean colour out; on its own
    task (a backlog), as a slow extractor would be."""

    modality = "vision"
    dim = FACE_DIM
    stream = "video"
    backlog = Backlog(frames=8, dropped_as="colour_frames_dropped")

    def __init__(self) -> None:
        self.seen = 0
        self.closed = False

    async def push(self, frame: Frame) -> FeatureUpdate:
        assert isinstance(frame, VideoFrame)
        self.seen += 1
        vector = np.zeros(self.dim, dtype=np.float32)
        vector[:3] = frame.image.reshape(-1, 3).mean(axis=0) / 255
        return FeatureUpdate(
            self.modality, [FeatureVector(frame.time, frame.time, vector)], frame.time
        )

    async def flush(self) -> FeatureUpdate:
        return FeatureUpdate(self.modality, watermark=math.inf)

    async def close(self) -> None:
        self.closed = True


@pytest.mark.slow
def test_a_new_extractor_is_one_line_in_the_list() -> None:
    """A grey picture has no face: the face extractor would call vision missing. With the
    face's line swapped for the colour extractor, vision is present in every window, and
    the list also decides what is attached: without the recogniser there is no text."""
    assert {acoustic, transcript} < set(EXTRACTORS)
    built: list[MeanColour] = []

    def colour(context: ExtractorContext) -> Extractor:
        built.append(MeanColour())
        return built[-1]

    async def run() -> tuple[list, object]:
        recorder = Recorder()
        async with Runtime(EngineConfig()) as runtime:
            source = SyntheticSource(3.0, audio="tone", video=(128, 128, 128), fps=10)
            session = Session(
                runtime, source, recorder, realtime=False, extractors=(acoustic, colour)
            )
            summary = await session.run()
        return recorder.events, summary

    events, summary = asyncio.run(run())
    sentiments = [e for e in events if isinstance(e, SentimentEvent)]
    assert len(sentiments) == 6 and summary.ok
    for event in sentiments:
        assert event.modalities["vision"].state == "present"
        assert event.modalities["vision"].action == "used"
        assert event.modalities["text"].state == "missing"
    (extractor,) = built
    assert extractor.closed and extractor.seen == 30
    text = [e for e in events if e.type == "status" and e.modality == "text"]
    assert [e.reason for e in text] == ["no source"]


@pytest.mark.slow
def test_a_source_without_video_never_builds_a_video_extractor() -> None:
    """The face factory is marked as reading video: an audio-only session never builds it
    (no face models loaded), while an unmarked factory is always built."""
    assert needed(face, {"audio": True, "video": False}) is False
    built: list[str] = []

    @reads("video")
    def watched(context: ExtractorContext) -> Extractor:
        built.append("video")
        return MeanColour()

    def unmarked(context: ExtractorContext) -> Extractor:
        built.append("unmarked")
        return MeanColour()

    async def run() -> object:
        async with Runtime(EngineConfig()) as runtime:
            source = SyntheticSource(2.0, audio="tone", video=None)
            session = Session(
                runtime,
                source,
                Recorder(),
                realtime=False,
                extractors=(acoustic, watched, unmarked),
            )
            return await session.run()

    assert asyncio.run(run()).ok
    assert built == ["unmarked"]
