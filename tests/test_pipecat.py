"""The pipecat processor: a real pipecat pipeline over the bundled sample, no network."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pipecat.frames.frames import EndFrame, Frame, InputAudioRawFrame, InputImageRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from stream_mmsa import Engine
from stream_mmsa.integrations.pipecat import (
    SentimentFrame,
    SentimentProcessor,
    image_rgb,
    play_file,
)
from stream_mmsa.paths import SAMPLE

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 14.0
"""Of the sample played in real time: a few windows with speech and a face."""


class Tap(FrameProcessor):
    """Keeps every frame that passes, in order, and passes it on."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        await self.push_frame(frame, direction)

    def count(self, kind: type[Frame]) -> int:
        return sum(isinstance(frame, kind) for frame in self.frames)


def test_images_become_rgb_arrays_and_bad_ones_say_why() -> None:
    rgba = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    frame = InputImageRawFrame(rgba.tobytes(), (3, 2), "RGBA")
    assert np.array_equal(image_rgb(frame), rgba[..., :3])
    rgb = rgba[..., :3].copy()
    assert np.array_equal(image_rgb(InputImageRawFrame(rgb.tobytes(), (3, 2), "RGB")), rgb)
    with pytest.raises(ValueError, match="needs 18 bytes"):
        image_rgb(InputImageRawFrame(b"\0" * 5, (3, 2), "RGB"))
    with pytest.raises(ValueError, match="image format 'XYZ'"):
        image_rgb(InputImageRawFrame(b"\0" * 18, (3, 2), "XYZ"))


def test_a_processor_needs_something_to_analyse() -> None:
    with pytest.raises(ValueError, match="audio=True, video=True"):
        SentimentProcessor(Engine(), audio=False, video=False)
    with pytest.raises(TypeError, match="event"):
        SentimentFrame()


@pytest.mark.slow
def test_a_pipecat_pipeline_gets_sentiment_frames() -> None:
    async def run() -> tuple[Tap, Tap]:
        before, after = Tap(), Tap()
        async with Engine() as engine:
            pipeline = Pipeline([before, SentimentProcessor(engine), after])
            worker = PipelineWorker(pipeline, idle_timeout_secs=None, enable_rtvi=False)
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await asyncio.gather(runner.run(), play_file(worker, SAMPLE, SECONDS))
        return before, after

    before, after = asyncio.run(run())
    for kind in (InputAudioRawFrame, InputImageRawFrame):  # the call's media goes on unchanged
        assert after.count(kind) == before.count(kind) > 0
    readings = [frame.event for frame in after.frames if isinstance(frame, SentimentFrame)]
    assert len(readings) >= 3
    assert isinstance(after.frames[-1], EndFrame)  # every reading arrived before the end
    assert len({event.session for event in readings}) == 1
    starts = [event.window.start for event in readings]
    assert starts == sorted(starts) and readings[-1].window.end <= SECONDS + 1
    faces = [event.modalities["vision"].expression for event in readings]
    assert any(face is not None for face in faces)  # the sample shows a face from the start
    assert any(event.transcript for event in readings)


@pytest.mark.slow
def test_the_pipecat_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pipecat_sentiment.py"), "--seconds", "8"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if " s  " in line]
    assert lines, result.stdout
    assert all(" face=" in line for line in lines)
