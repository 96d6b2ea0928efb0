"""stream_mmsa in a pipecat pipeline: a media file played in as a call would arrive, a
SentimentProcessor reading it, and a processor after it printing each SentimentFrame.

.venv/bin/pip install -e '.[pipecat]'
.venv/bin/python examples/pipecat_sentiment.py [MEDIA] [--seconds N]   # default: the sample

In a real bot, `transport.input()` replaces play_file and your STT/LLM/TTS follow.
"""

import argparse
import asyncio
from pathlib import Path

from pipecat.frames.frames import Frame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from stream_mmsa import Engine
from stream_mmsa.integrations.pipecat import SentimentFrame, SentimentProcessor, play_file
from stream_mmsa.paths import SAMPLE


class PrintSentiment(FrameProcessor):
    """Stands for whatever reacts to the reading (an LLM prompt, a dashboard)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, SentimentFrame):
            event = frame.event
            s, w = event.sentiment, event.window
            face = event.modalities["vision"].expression
            print(
                f"{w.start:5.1f}–{w.end:5.1f} s  {s.score:+.2f} {s.label:8}"
                f" face={face.label if face else '-':8} {event.transcript!r}",
                flush=True,
            )
        await self.push_frame(frame, direction)


async def main(path: Path, seconds: float | None) -> None:
    async with Engine() as engine:
        pipeline = Pipeline([SentimentProcessor(engine), PrintSentiment()])
        worker = PipelineWorker(pipeline, idle_timeout_secs=None, enable_rtvi=False)
        runner = WorkerRunner(handle_sigint=True)
        await runner.add_workers(worker)
        await asyncio.gather(runner.run(), play_file(worker, path, seconds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("media", nargs="?", type=Path, default=SAMPLE)
    parser.add_argument("--seconds", type=float, help="play only the first N seconds")
    args = parser.parse_args()
    asyncio.run(main(args.media, args.seconds))
