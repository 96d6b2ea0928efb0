"""stream_mmsa as a library: a file analysed as fast as possible, then audio pushed from code.

.venv/bin/python examples/library.py [MEDIA]   # default: the bundled sample
"""

import asyncio
import sys
from pathlib import Path

import av

from stream_mmsa import Engine, PushSource, SentimentEvent, SessionEvent
from stream_mmsa.paths import SAMPLE


def show(event: SentimentEvent | SessionEvent) -> None:
    if isinstance(event, SentimentEvent):
        s, w = event.sentiment, event.window
        print(f"{w.start:5.1f}–{w.end:5.1f} s  {s.score:+.2f} {s.label:8} {event.transcript!r}")
    elif event.state != "degraded":  # the session's last event: ended or failed, and why
        print(f"session {event.session} {event.state}: {event.reason}")


async def push_audio(source: PushSource, path: Path, seconds: float) -> None:
    """Your own audio (here decoded with PyAV at its native rate), with its media times."""
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            if frame.time >= seconds:
                break
            source.push_audio(frame.to_ndarray()[0], frame.sample_rate, t=frame.time)
            await asyncio.sleep(0)  # let the engine take what was pushed
    source.end()


async def main(path: Path) -> None:
    async with Engine() as engine:
        async for event in engine.analyze(path):  # a path: as fast as possible
            if isinstance(event, SentimentEvent | SessionEvent):
                show(event)

        source = PushSource(audio=True)
        feeder = asyncio.create_task(push_audio(source, path, seconds=5.0))
        async for event in engine.analyze(source, realtime=False):  # close windows by media time
            if isinstance(event, SentimentEvent | SessionEvent):
                show(event)
        await feeder


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE))
