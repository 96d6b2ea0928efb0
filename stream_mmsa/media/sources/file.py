"""Media files decoded with PyAV onto the session clock.

Each stream is decoded through its own demuxer, so the two merge in exact time order
with bounded memory whatever the file's interleaving. Every PyAV call runs on one
worker thread per source (PyAV objects are not thread-safe), one batch ahead of the
consumer, so the event loop never waits on a decoder.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

from ..frames import AUDIO_RATE, AudioChunk, Frame, VideoFrame
from .base import Source, SourceError
from .pacing import Pacer, arrival

_BATCH = 32
"""Frames per trip to the decode thread: about half a second of media, a few ms of work."""

_GAP = 0.05
"""Audio whose pts jumps ahead by more than this (s) restarts the chunk grid there (a gap)."""


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _decoded(container: av.container.InputContainer, stream, skipped: Counter[str]) -> Iterator:
    """The stream's frames; a packet the decoder rejects is skipped and counted, like ffmpeg.

    A container that cannot be read any further ends the stream where it breaks (counted).
    """
    kind = stream.type
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError:
            skipped[f"{kind}_unreadable"] += 1
            return
        try:
            yield from packet.decode()
        except av.error.FFmpegError:
            skipped[f"{kind}_packets_skipped"] += 1


def _audio(path: Path, chunk: int, skipped: Counter[str]) -> Iterator[tuple[float, np.ndarray]]:
    """(file time, samples) in mono float32 16 kHz chunks of `chunk` samples."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        rest = np.zeros(0, dtype=np.float32)
        base, done = 0.0, 0  # time of the grid's first sample, samples yielded since
        for frame in itertools.chain(_decoded(container, stream, skipped), [None]):
            for out in resampler.resample(frame):
                held = done + len(rest)  # samples on the current grid
                jump = out.time - base - held / AUDIO_RATE if out.time is not None else 0.0
                if out.time is not None and (held == 0 or jump > _GAP):
                    if len(rest):
                        yield base + done / AUDIO_RATE, rest
                    rest, base, done = rest[:0], out.time, 0
                buffer = np.concatenate([rest, out.to_ndarray()[0]])
                full = len(buffer) // chunk * chunk
                for start in range(0, full, chunk):
                    yield base + (done + start) / AUDIO_RATE, buffer[start : start + chunk]
                rest, done = buffer[full:], done + full
        if len(rest):
            yield base + done / AUDIO_RATE, rest


def _video(path: Path, skipped: Counter[str]) -> Iterator[tuple[float, np.ndarray]]:
    """(file time, RGB image) per frame; frames without a pts follow the stream's rate."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        step = 1 / float(stream.average_rate or 25)
        time = -step
        for frame in _decoded(container, stream, skipped):
            time = frame.time if frame.time is not None else time + step
            yield time, frame.to_ndarray(format="rgb24")


def _shifted(
    kind: type[AudioChunk] | type[VideoFrame],
    first: tuple[float, np.ndarray],
    rest: Iterator[tuple[float, np.ndarray]],
    t0: float,
) -> Iterator[Frame]:
    for time, data in itertools.chain([first], rest):
        yield kind(data, time - t0)


def _decode(path: Path, chunk: int, skipped: Counter[str]) -> Iterator[Frame]:
    """Both streams as frames in arrival order, timed from the file's first pts."""
    audio, video = _audio(path, chunk, skipped), _video(path, skipped)
    try:
        heads = [(AudioChunk, next(audio, None), audio), (VideoFrame, next(video, None), video)]
        heads = [head for head in heads if head[1] is not None]
        if not heads:
            raise SourceError(str(path), "no decodable audio or video frames")
        t0 = min(first[0] for _, first, _ in heads)
        yield from heapq.merge(*(_shifted(*head, t0) for head in heads), key=arrival)
    except av.error.FFmpegError as error:
        raise SourceError(str(path), f"cannot decode: {_reason(error)}") from error
    finally:
        audio.close()
        video.close()


class FileSource(Source):
    """A media file played from its first pts; `realtime=False` runs as fast as it is read.

    The file is probed on construction, so an unreadable one fails here with a
    SourceError rather than later inside the engine.
    """

    def __init__(self, path: str | Path, realtime: bool = True, chunk_ms: float = 40.0) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path.name}"
        self.realtime = realtime
        self._chunk = max(1, round(AUDIO_RATE * chunk_ms / 1000))
        try:
            with av.open(str(self.path)) as container:
                self.has_audio = bool(container.streams.audio)
                self.has_video = bool(container.streams.video)
        except (av.error.FFmpegError, OSError) as error:
            raise SourceError(str(self.path), f"cannot open: {_reason(error)}") from error
        if not (self.has_audio or self.has_video):
            raise SourceError(str(self.path), "no audio or video stream")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="file-source")
        self._decoder: Iterator[Frame] | None = None
        self._closed = False
        self._skipped: Counter[str] = Counter()

    def losses(self) -> dict[str, float]:
        return dict(self._skipped)

    async def frames(self) -> AsyncIterator[Frame]:
        loop = asyncio.get_running_loop()
        decoder = self._decoder = _decode(self.path, self._chunk, self._skipped)

        def take() -> list[Frame]:
            return list(itertools.islice(decoder, _BATCH))

        pacer = Pacer(self.realtime, self.origin)
        pending = loop.run_in_executor(self._executor, take)
        try:
            while batch := await pending:
                pending = loop.run_in_executor(self._executor, take)  # decode while this plays
                for frame in batch:
                    await pacer.wait(frame)
                    yield frame
        finally:
            pending.cancel()
            if not self._closed:
                await loop.run_in_executor(self._executor, decoder.close)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._decoder is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._decoder.close)
        self._executor.shutdown(wait=False)
