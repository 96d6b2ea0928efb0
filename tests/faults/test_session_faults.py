"""Injected faults in a running session: each ends in order, says why, and loses nothing
that was committed; a failing session never disturbs a healthy one beside it.

The real models run (one Runtime for the module, on one event loop); the media is the
bundled sample's first seconds, analysed as fast as possible.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Recorder

from stream_mmsa.config import EngineConfig
from stream_mmsa.engine import Runtime, Session, SessionSummary
from stream_mmsa.events import AnyEvent
from stream_mmsa.features.asr import WhisperAsr
from stream_mmsa.features.face import FaceLandmarks
from stream_mmsa.inference import WorkerOverloaded
from stream_mmsa.media.frames import AudioChunk, Frame, VideoFrame
from stream_mmsa.media.sources.base import Source, SourceError
from stream_mmsa.media.sources.file import FileSource
from stream_mmsa.sinks.base import Sink
from stream_mmsa.sinks.eventlog import EventLog, read_events
from stream_mmsa.sinks.group import SinkGroup
from stream_mmsa.sinks.jsonl import JsonlSink
from stream_mmsa.windowing import window_count

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "media" / "sample.mp4"
SECONDS = 6.0


class Clip(Source):
    """The first SECONDS of the sample, with a fault injected by `fault(frame)`."""

    def __init__(self, fault=None, seconds: float = SECONDS, path: Path = SAMPLE) -> None:
        self.inner = FileSource(path, realtime=False)
        self.name, self.has_audio, self.has_video = "clip", True, True
        self.fault, self.seconds = fault, seconds

    async def frames(self) -> AsyncIterator[Frame]:
        async for frame in self.inner.frames():
            if frame.time > self.seconds:
                return
            if self.fault is not None:
                frame = await self.fault(frame)
            yield frame

    def losses(self) -> dict[str, float]:
        return self.inner.losses()

    async def close(self) -> None:
        await self.inner.close()


class FailsAfter(Sink):
    """Takes `n` events, then raises (a disk that fills, a socket that breaks)."""

    def __init__(self, n: int, error: Exception) -> None:
        self.n, self.error, self.got = n, error, 0

    def __repr__(self) -> str:
        return "FailsAfter"

    async def send(self, event: AnyEvent) -> None:
        if self.got >= self.n:
            raise self.error
        self.got += 1

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[asyncio.AbstractEventLoop, Runtime]]:
    loop = asyncio.new_event_loop()
    runtime = Runtime(EngineConfig())
    loop.run_until_complete(runtime.__aenter__())
    yield loop, runtime
    loop.run_until_complete(runtime.__aexit__(None, None, None))
    loop.close()


def analyse(engine, source: Source, *sinks: Sink, session_id: str = "s") -> tuple:
    loop, runtime = engine
    recorder = Recorder()
    group = SinkGroup([recorder, *sinks])

    async def go() -> SessionSummary:
        session = Session(runtime, source, group, session_id=session_id, realtime=False)
        summary = await session.run()
        await group.close()
        return summary

    summary = loop.run_until_complete(asyncio.wait_for(go(), 120))
    return summary, recorder.events


def kinds(events: list[AnyEvent], kind: str) -> list[AnyEvent]:
    return [e for e in events if e.type == kind]


def assert_orderly(events: list[AnyEvent], final: str) -> None:
    """Gapless, and exactly one session end, the last event."""
    assert [e.seq for e in events] == list(range(len(events)))
    ends = [e for e in kinds(events, "session") if e.state in ("ended", "failed")]
    assert ends == [events[-1]]
    assert events[-1].state == final


def at(seconds: float, error: Exception):
    async def fault(frame: Frame) -> Frame:
        if frame.time >= seconds:
            raise error
        return frame

    return fault


def test_healthy_clip_ends_with_source_ended(engine) -> None:
    summary, events = analyse(engine, Clip())
    assert_orderly(events, "ended")
    assert events[-1].reason == "source ended"
    assert len(kinds(events, "sentiment")) == window_count(summary.duration, 0.5)
    assert summary.ok


def test_decoder_error_mid_stream_fails_the_session_and_keeps_earlier_windows(engine) -> None:
    error = SourceError("clip", "cannot decode: Invalid data found")
    summary, events = analyse(engine, Clip(at(3.0, error)))
    assert_orderly(events, "failed")
    assert "Invalid data found" in events[-1].reason
    assert summary.error is error and not summary.ok
    assert 1 <= len(kinds(events, "sentiment")) <= window_count(3.0, 0.5)


def test_asr_exception_fails_the_session_with_its_reason(engine, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("CTranslate2: out of memory")

    monkeypatch.setattr(WhisperAsr, "decode", broken)
    _summary, events = analyse(engine, Clip())
    assert_orderly(events, "failed")
    assert "CTranslate2: out of memory" in events[-1].reason


def test_face_model_exception_fails_the_session_with_its_reason(engine, monkeypatch) -> None:
    def broken(self, image, time_s):
        raise RuntimeError("landmarker graph crashed")

    monkeypatch.setattr(FaceLandmarks, "__call__", broken)
    _, events = analyse(engine, Clip())
    assert_orderly(events, "failed")
    assert "landmarker graph crashed" in events[-1].reason


def test_worker_overload_is_a_reason_not_a_stall(engine, monkeypatch) -> None:
    async def overloaded(request):
        raise WorkerOverloaded("inference queue full (64 windows pending)")

    monkeypatch.setattr(engine[1].worker, "submit", overloaded)
    _, events = analyse(engine, Clip())
    assert_orderly(events, "failed")
    assert "inference queue full" in events[-1].reason


def test_stalled_source_stops_within_bounded_time(engine) -> None:
    loop, runtime = engine

    async def stall(frame: Frame) -> Frame:
        if frame.time >= 2.0:
            await asyncio.sleep(3600)  # a camera that froze: no frames, no error
        return frame

    recorder = Recorder()

    async def go() -> float:
        session = Session(runtime, Clip(stall), recorder, session_id="s", realtime=False)
        task = asyncio.create_task(session.run())
        await asyncio.sleep(4.0)
        started = time.monotonic()
        session.stop("signal SIGTERM")
        await asyncio.wait_for(task, 30)
        return time.monotonic() - started

    assert loop.run_until_complete(go()) < 15
    assert_orderly(recorder.events, "ended")
    assert recorder.events[-1].reason == "stopped: signal SIGTERM"
    assert len(kinds(recorder.events, "sentiment")) == window_count(2.0, 0.5)


def test_a_failing_sink_is_reported_to_the_others_and_counted(engine) -> None:
    failing = FailsAfter(5, OSError(28, "No space left on device"))
    summary, events = analyse(engine, Clip(), failing)
    assert_orderly(events, "ended")  # the session goes on to the end of the media
    degraded = [e for e in kinds(events, "session") if e.state == "degraded"]
    assert len(degraded) == 1 and "No space left on device" in degraded[0].reason
    assert degraded[0].seq == 6  # right after the event the sink could not take
    (failure,) = summary.sink_failures
    assert failure.lost == len(events) - 5  # every event from the 6th on, its own report too


def test_disk_full_jsonl_is_reported(engine) -> None:
    summary, events = analyse(engine, Clip(seconds=2.0), JsonlSink("/dev/full"))
    (failure,) = summary.sink_failures
    assert "No space left on device" in failure.error
    assert failure.lost == len(events)
    assert not summary.ok


def test_slow_sink_applies_back_pressure_and_loses_nothing(engine, tmp_path: Path) -> None:
    class Slow(Recorder):
        async def send(self, event: AnyEvent) -> None:
            await asyncio.sleep(0.02)
            await super().send(event)

    slow = Slow()
    summary, events = analyse(engine, Clip(seconds=3.0), slow)
    assert [e.seq for e in slow.events] == [e.seq for e in events]
    assert summary.ok


def test_clock_jump_keeps_the_cadence_and_reports_the_gap(engine) -> None:
    async def jump(frame: Frame) -> Frame:  # the source's clock leaps 3 s at t = 2 s
        if frame.time < 2.0:
            return frame
        if isinstance(frame, AudioChunk):
            return AudioChunk(frame.samples, frame.time + 3.0)
        return VideoFrame(frame.image, frame.time + 3.0)

    summary, events = analyse(engine, Clip(jump))
    assert_orderly(events, "ended")
    sentiments = kinds(events, "sentiment")
    ends = [e.window.end for e in sentiments]
    assert ends == pytest.approx([0.5 * (k + 1) for k in range(len(ends))])
    assert summary.duration == pytest.approx(SECONDS + 3.0, abs=0.1)
    across = [e for e in sentiments if 4.0 < e.window.end <= 5.0]  # 4 s windows, 3 s of gap
    assert across and all(e.modalities["audio"].state in ("missing", "partial") for e in across)


def test_corrupt_packets_are_skipped_counted_and_the_run_goes_on(engine, tmp_path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    data = bytearray(SAMPLE.read_bytes())
    data[150_000:180_000] = np.random.default_rng(0).integers(0, 256, 30_000, np.uint8).tobytes()
    corrupt.write_bytes(bytes(data))
    summary, events = analyse(engine, Clip(seconds=1e9, path=corrupt))
    assert_orderly(events, "ended")
    assert summary.duration > 34.0  # to the end of the file, not the first bad packet
    degraded = [e for e in kinds(events, "session") if e.state == "degraded"]
    assert degraded and "skipped" in degraded[0].reason
    assert sum(summary.dropped[k] for k in summary.dropped if "skipped" in k) >= 1


def test_event_log_whose_directory_vanishes_is_reported(engine, tmp_path: Path) -> None:
    folder = tmp_path / "logs"

    async def remove(frame: Frame) -> Frame:
        if frame.time >= 2.0 and folder.exists():
            shutil.rmtree(folder)
        return frame

    log = EventLog(folder / "events.sqlite")
    summary, _events = analyse(engine, Clip(remove, seconds=4.0), log)
    (failure,) = summary.sink_failures
    assert failure.lost >= 1 and "events.sqlite" in failure.sink


def test_a_crashing_session_beside_a_healthy_one(engine, tmp_path: Path) -> None:
    loop, runtime = engine
    db = tmp_path / "events.sqlite"

    async def go() -> tuple[SessionSummary, SessionSummary]:
        async with EventLog(db) as log:
            source = Clip(at(2.0, RuntimeError("peer vanished")))
            crash = Session(runtime, source, log, session_id="bad", realtime=False)
            healthy = Session(runtime, Clip(), log, session_id="good", realtime=False)
            return await asyncio.gather(crash.run(), healthy.run())

    bad, good = loop.run_until_complete(asyncio.wait_for(go(), 180))
    assert bad.error is not None and good.ok
    logged = [json.loads(e.to_json()) for e in read_events(db, "good")]
    assert [e["seq"] for e in logged] == list(range(len(logged)))
    assert len([e for e in logged if e["type"] == "sentiment"]) == window_count(good.duration, 0.5)
    assert logged[-1]["type"] == "session" and logged[-1]["state"] == "ended"
    assert read_events(db, "bad")[-1].state == "failed"


def test_fast_runs_are_identical(engine) -> None:
    def strip(events: list[AnyEvent]) -> list[dict]:
        rows = [json.loads(e.to_json()) for e in events]
        for row in rows:
            row.pop("emitted_at"), row.pop("latency_ms", None)
        return rows

    _, first = analyse(engine, Clip())
    _, second = analyse(engine, Clip())
    assert strip(first) == strip(second)
