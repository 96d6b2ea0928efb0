"""A pipecat processor: the call's audio and images in, sentiment frames out.

    pip install 'stream_mmsa[pipecat]'

    async with Engine() as engine:
        Pipeline([transport.input(), SentimentProcessor(engine), ..., transport.output()])

`SentimentProcessor` feeds pipecat's `InputAudioRawFrame`s and `InputImageRawFrame`s to
one stream_mmsa session (a `PushSource`, stamped on arrival like any live source) and
pushes a `SentimentFrame` downstream for every window the engine closes. Every frame it
gets goes on unchanged, so speech-to-text and the rest of the pipeline see what they
saw before. The `Engine` is yours: its models load once and serve every call.
`play_file` plays a media file into a pipeline as those same input frames, in real
time, for trying a pipeline without a transport (the example and the tests use it).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    from pipecat.frames.frames import (
        CancelFrame,
        DataFrame,
        EndFrame,
        Frame,
        InputAudioRawFrame,
        InputImageRawFrame,
        StartFrame,
    )
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError(
        "stream_mmsa.integrations.pipecat needs pipecat: pip install 'stream_mmsa[pipecat]'"
    ) from exc

from ..api import Engine
from ..events import SentimentEvent, SessionEvent
from ..media.frames import AudioChunk, VideoFrame
from ..media.sources.file import FileSource
from ..media.sources.push import PushSource

STOP_TIMEOUT_S = 10.0
"""How long a cancelled session may take to stop (it finishes the window it is in);
pipecat's default of 1 s would abandon it mid-way."""


@dataclass
class SentimentFrame(DataFrame):
    """One window's reading; `event` is the engine's SentimentEvent (score, label,
    confidence, each modality's state and the face's expression)."""

    event: SentimentEvent
    # An interruption (the user talking over the bot) must not drop a reading.
    interruptible: bool = field(default=False, init=False)


def image_rgb(frame: InputImageRawFrame) -> np.ndarray:
    """The frame's image as RGB uint8 (H, W, 3); ValueError for a format it cannot be."""
    width, height = frame.size
    if frame.format in ("RGB", None):  # transports' raw images are RGB unless they say
        if len(frame.image) != width * height * 3:
            raise ValueError(f"an RGB image of {width}×{height} needs {width * height * 3} bytes")
        return np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)
    from PIL import Image  # pipecat's own dependency

    try:
        image = Image.frombytes(frame.format, (width, height), frame.image)
    except ValueError as exc:
        raise ValueError(f"image format {frame.format!r} ({width}×{height}): {exc}") from None
    return np.asarray(image.convert("RGB"))


class SentimentProcessor(FrameProcessor):
    """Runs one stream_mmsa session over the pipeline's input media.

    engine: an entered `Engine` (its models are shared by every processor using it).
    audio, video: which input frames to analyse; both by default.
    The session starts with the pipeline's StartFrame; an EndFrame waits until the media
    already pushed is analysed and its SentimentFrames are downstream, then goes on; a
    CancelFrame stops the session at once. A failed session is reported as an error
    frame upstream.
    """

    def __init__(
        self, engine: Engine, *, audio: bool = True, video: bool = True, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self._engine = engine
        self._streams = {"audio": audio, "video": video}
        if not (audio or video):
            raise ValueError("SentimentProcessor needs audio=True, video=True or both")
        self._source: PushSource | None = None
        self._reader: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._source = PushSource(**self._streams, name="pipecat")
            self._reader = self.create_task(self._read(self._source), name="stream-mmsa")
            return
        if isinstance(frame, EndFrame):
            await self._finish(cancel=False)
        elif isinstance(frame, CancelFrame):
            await self._finish(cancel=True)
        elif self._source is not None:
            if isinstance(frame, InputAudioRawFrame) and self._streams["audio"]:
                pcm = np.frombuffer(frame.audio, "<i2").reshape(-1, frame.num_channels)
                self._source.push_audio(pcm, frame.sample_rate)
            elif isinstance(frame, InputImageRawFrame) and self._streams["video"]:
                self._source.push_video(image_rgb(frame))
        await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await self._finish(cancel=True)
        await super().cleanup()

    async def _read(self, source: PushSource) -> None:
        async with contextlib.aclosing(self._engine.analyze(source)) as events:
            async for event in events:
                if isinstance(event, SentimentEvent):
                    await self.push_frame(SentimentFrame(event=event))
                elif isinstance(event, SessionEvent) and event.state == "failed":
                    await self.push_error(f"stream_mmsa session failed: {event.reason}")

    async def _finish(self, *, cancel: bool) -> None:
        """End the session: let it analyse what it has (EndFrame) or stop it (cancel)."""
        source, reader, self._source, self._reader = self._source, self._reader, None, None
        if source is None or reader is None:
            return
        source.end()
        if cancel:
            await self.cancel_task(reader, STOP_TIMEOUT_S)
        else:
            await reader


async def play_file(worker: PipelineWorker, path: str | Path, seconds: float | None = None) -> None:
    """Play a media file into `worker` as a transport would, then end the pipeline.

    Once the pipeline has started: 16 kHz mono 16-bit audio in 40 ms frames and RGB
    images, paced in real time, then an EndFrame; `seconds` stops early. Returns at once
    if the pipeline finishes without starting.
    """
    started, finished = asyncio.Event(), asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def on_started(_worker: PipelineWorker, _frame: Frame) -> None:
        started.set()

    @worker.event_handler("on_pipeline_finished")
    async def on_finished(_worker: PipelineWorker, _frame: Frame) -> None:
        finished.set()

    waits = [asyncio.ensure_future(event.wait()) for event in (started, finished)]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    if not started.is_set():
        return
    source = FileSource(path, realtime=True)
    try:
        async for media in source.frames():
            if finished.is_set() or (seconds is not None and media.time >= seconds):
                break
            if isinstance(media, AudioChunk):
                pcm = np.clip(media.samples * 32768.0, -32768, 32767).astype("<i2")
                await worker.queue_frame(InputAudioRawFrame(pcm.tobytes(), media.sample_rate, 1))
            elif isinstance(media, VideoFrame):
                height, width = media.image.shape[:2]
                image = media.image.tobytes()
                await worker.queue_frame(InputImageRawFrame(image, (width, height), "RGB"))
    finally:
        await source.close()
    await worker.stop_when_done()
