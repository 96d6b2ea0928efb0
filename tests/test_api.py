"""The library API: PushSource on its own (fast), Engine.analyze with the real models (slow),
the example script, and the small CLI additions (--version, bench --stages, eval --csv)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import Recorder
from typer.testing import CliRunner

import stream_mmsa
from stream_mmsa import (
    AnyEvent,
    Engine,
    FileSource,
    PushSource,
    SentimentEvent,
    SessionEvent,
    Source,
    TranscriptEvent,
)
from stream_mmsa.cli import app
from stream_mmsa.media.frames import AUDIO_RATE, AudioChunk, Frame, VideoFrame
from stream_mmsa.train.evaluate import TABLE_METRICS, EvalRow

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "media" / "sample.mp4"
runner = CliRunner()


def drain(source: PushSource) -> list[Frame]:
    """Everything pushed so far, after end()."""

    async def take() -> list[Frame]:
        return [frame async for frame in source.frames()]

    source.end()
    return asyncio.run(take())


def joined(frames: list[Frame]) -> np.ndarray:
    chunks = [f for f in frames if isinstance(f, AudioChunk)]
    for a, b in itertools.pairwise(chunks):
        assert b.time == pytest.approx(a.end, abs=1e-9)  # one continuous grid
    return np.concatenate([c.samples for c in chunks])


def tone(hz: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(round(rate * seconds)) / rate)).astype(
        np.float32
    )


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def test_import_is_light_and_versioned() -> None:
    code = "import sys, stream_mmsa; print(stream_mmsa.__version__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [stream_mmsa.__version__, "False"]
    assert (ROOT / "stream_mmsa" / "py.typed").exists()
    assert {"Engine", "PushSource", "parse_event", "EngineConfig"} <= set(stream_mmsa.__all__)


def test_resamples_a_48k_tone_pushed_in_10ms_pieces_to_16k() -> None:
    source = PushSource(audio=True)
    wave = tone(1000, 48_000, 1.0)
    for start in range(0, len(wave), 480):
        source.push_audio(wave[start : start + 480], 48_000, t=start / 48_000)
    out = joined(drain(source))
    assert len(out) == AUDIO_RATE
    assert peak_hz(out, AUDIO_RATE) == pytest.approx(1000, abs=2)
    steady = out[100:-100]  # away from the resampler's filter edges at the ends
    n = np.arange(len(steady)) * 2 * np.pi * 1000 / AUDIO_RATE
    basis = np.stack([np.sin(n), np.cos(n)], axis=1)
    fit, *_ = np.linalg.lstsq(basis, steady, rcond=None)
    assert np.hypot(*fit) == pytest.approx(0.5, abs=0.01)
    residual = steady - basis @ fit
    assert np.sqrt(np.mean(residual**2)) < 0.005  # a clean sine: no clicks at the 10 ms joins


def test_int16_stereo_is_scaled_and_downmixed() -> None:
    source = PushSource(audio=True)
    left = np.full(1600, 16384, dtype=np.int16)  # 0.5 full scale
    right = np.zeros(1600, dtype=np.int16)
    source.push_audio(np.stack([left, right], axis=1), AUDIO_RATE, t=0.0)
    out = joined(drain(source))
    assert out.dtype == np.float32 and len(out) == 1600
    assert out[200:-200] == pytest.approx(0.25, abs=1e-3)


def test_times_follow_the_sample_clock_and_gaps() -> None:
    source = PushSource(audio=True)
    source.push_audio(np.zeros(1600, np.float32), AUDIO_RATE, t=1.0)
    source.push_audio(np.zeros(1600, np.float32), AUDIO_RATE, t=1.1 + 0.01)  # jitter: kept
    source.push_audio(np.zeros(800, np.float32), AUDIO_RATE, t=3.0)  # a gap: new grid
    chunks = drain(source)
    assert chunks[0].time == 1.0
    assert chunks[-1].end == pytest.approx(3.05)
    assert max(c.end for c in chunks if c.time < 3) == pytest.approx(1.2)
    assert max(len(c.samples) for c in chunks) <= AUDIO_RATE // 25  # 40 ms pieces


def test_arrival_times_are_on_the_session_clock() -> None:
    source = PushSource(audio=True, video=True)
    source.push_audio(np.zeros(160, np.float32), AUDIO_RATE)
    source.push_video(np.zeros((4, 4, 3), np.uint8))
    frames = drain(source)
    assert {type(f) for f in frames} == {AudioChunk, VideoFrame}
    for frame in frames:
        assert 0 <= frame.time <= source.now()
    assert source.origin is not None


def test_video_keeps_the_latest_frame() -> None:
    source = PushSource(video=True)
    for k in range(3):
        source.push_video(np.full((2, 2, 3), k, np.uint8), t=k / 10)
    (frame,) = drain(source)
    assert frame.time == 0.2 and frame.image[0, 0, 0] == 2


def test_a_full_buffer_drops_the_oldest_audio_and_says_so() -> None:
    source = PushSource(audio=True, max_buffer_s=1.0)
    for k in range(30):  # 3 s, nobody reading
        source.push_audio(np.zeros(1600, np.float32), AUDIO_RATE, t=k / 10)
    assert source.losses() == {"audio_dropped_s": pytest.approx(2.0)}
    chunks = drain(source)
    assert chunks[0].time == pytest.approx(2.0) and chunks[-1].end == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.push_audio(np.zeros(10, np.int32), 16000), "int16 or float32"),
        (lambda s: s.push_audio(np.zeros((10, 6), np.float32), 16000), "channels"),
        (lambda s: s.push_audio(np.zeros(10, np.float32), 4000), "8000"),
        (lambda s: s.push_audio(np.zeros(10, np.float32), 200_000), "192000"),
        (lambda s: s.push_audio(np.zeros(10, np.float32), 16000, t=-1), "before the session"),
        (lambda s: s.push_video(np.zeros((4, 4), np.uint8)), "(H, W, 3)"),
        (lambda s: s.push_video(np.zeros((4, 4, 3), np.float32)), "uint8"),
    ],
)
def test_bad_input_is_a_clear_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(PushSource(audio=True, video=True))


def test_times_must_not_go_back() -> None:
    source = PushSource(audio=True, video=True)
    source.push_audio(np.zeros(1600, np.float32), AUDIO_RATE, t=1.0)
    with pytest.raises(ValueError, match="before the last push"):
        source.push_audio(np.zeros(160, np.float32), AUDIO_RATE, t=0.5)
    source.push_video(np.zeros((2, 2, 3), np.uint8), t=1.0)
    with pytest.raises(ValueError, match="before the last frame"):
        source.push_video(np.zeros((2, 2, 3), np.uint8), t=0.9)


def test_undeclared_streams_and_pushes_after_end_are_refused() -> None:
    with pytest.raises(ValueError, match="declare"):
        PushSource()
    with pytest.raises(ValueError, match="without video"):
        PushSource(audio=True).push_video(np.zeros((2, 2, 3), np.uint8))
    source = PushSource(audio=True)
    source.end()
    with pytest.raises(RuntimeError, match="after end"):
        source.push_audio(np.zeros(10, np.float32), AUDIO_RATE)


def test_analyze_needs_the_engine_block() -> None:
    async def outside() -> None:
        async for _ in Engine().analyze(SAMPLE):
            pass

    with pytest.raises(RuntimeError, match="async with Engine"):
        asyncio.run(outside())


def test_version_option() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"stream-mmsa {stream_mmsa.__version__}"


def test_bench_refuses_unknown_stages() -> None:
    result = runner.invoke(app, ["bench", "--stages", "model,modle"])
    assert result.exit_code == 2
    assert "--stages: unknown stage modle; choose from model, face" in result.output
    result = runner.invoke(app, ["bench", "--stages", " , "])
    assert result.exit_code == 2 and "choose from" in result.output


def test_bench_overrides_are_checked_and_kept_out_of_the_readme() -> None:
    result = runner.invoke(app, ["bench", "--stages", "face", "--set", "engine.face_runtime=onnx"])
    assert result.exit_code == 2 and "face_runtime" in result.output
    args = ["bench", "--readme", "--set", "engine.face_runtime=mediapipe"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "drop --set or --readme" in result.output


def test_eval_csv_appends_rows_in_mmsa_layout(tmp_path: Path, monkeypatch) -> None:
    metrics = dict.fromkeys(TABLE_METRICS, 0.5) | {"MAE": 0.8234, "Non0_acc_2": 0.84262}
    rows = [EvalRow("complete", "gate", metrics, 0.0), EvalRow("complete", "never", metrics, 0.0)]
    monkeypatch.setattr("stream_mmsa.train.run.evaluate_checkpoint", lambda *a: (rows, "table"))
    out, data = tmp_path / "results" / "mosi.csv", tmp_path / "label.csv"
    args = ["eval", "--data", str(data), "--checkpoint", "ckpt/my-model.pt", "--csv", str(out)]
    for _ in range(2):  # MMSA appends to its results file
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    with out.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["Model", *TABLE_METRICS]
    assert [r["Model"] for r in table] == ["my-model/complete/gate", "my-model/complete/never"] * 2
    assert table[0]["Non0_acc_2"] == "(84.26, 0.0)" and table[0]["MAE"] == "(82.34, 0.0)"
    other = tmp_path / "other.csv"
    other.write_text("Model,Acc\n")
    result = runner.invoke(app, [*args[:-1], str(other)])
    assert result.exit_code == 2 and "--csv:" in result.output and "other columns" in result.output


# The engine with the real models: one Engine for every scenario, models loaded once.


class FirstSeconds(Source):
    """Any Source works: here, a file's first `seconds`."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.inner = FileSource(path, realtime=False)
        self.name, self.seconds = "first-seconds", seconds
        self.has_audio, self.has_video = self.inner.has_audio, self.inner.has_video

    async def frames(self) -> AsyncIterator[Frame]:
        async with contextlib.aclosing(self.inner.frames()) as frames:
            async for frame in frames:
                if frame.time >= self.seconds:
                    return
                yield frame

    async def close(self) -> None:
        await self.inner.close()


def decoded_audio(path: Path, seconds: float) -> list[np.ndarray]:
    """The file's audio as 48 kHz stereo int16 pieces, as a call SDK would hand it over."""
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=48_000)
    pieces = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            if frame.time >= seconds:
                break
            pieces += [out.to_ndarray().reshape(-1, 2) for out in resampler.resample(frame)]
    return pieces


async def feed_live(source: PushSource, pieces: list[np.ndarray]) -> None:
    """Push at the pace the audio plays, stamped on arrival."""
    for piece in pieces:
        source.push_audio(piece, 48_000)
        await asyncio.sleep(len(piece) / 48_000)
    source.end()


@pytest.fixture(scope="module")
def scenarios() -> dict[str, list[AnyEvent]]:
    async def go() -> dict[str, list[AnyEvent]]:
        out: dict[str, list[AnyEvent]] = {}
        async with Engine() as engine:
            out["first"] = [e async for e in engine.analyze(FirstSeconds(SAMPLE, 6.0))]

            seen = Recorder()
            async with contextlib.aclosing(engine.analyze(SAMPLE, sinks=[seen])) as events:
                async for event in events:
                    if isinstance(event, SentimentEvent):
                        break
            out["stopped"] = list(seen.events)  # closed: the session has ended already

            source = PushSource(audio=True)
            feeder = asyncio.create_task(feed_live(source, decoded_audio(SAMPLE, 3.0)))
            out["push"] = [e async for e in engine.analyze(source)]
            await feeder

            left = Recorder()
            async for event in engine.analyze(SAMPLE, sinks=[left], session_id="left"):
                if isinstance(event, SentimentEvent):
                    break  # no aclose: leaving the engine stops and waits for the session
        out["left"] = left.events
        return out

    return asyncio.run(go())


def gapless(events: list[AnyEvent]) -> None:
    assert [e.seq for e in events] == list(range(len(events)))
    assert len({e.session for e in events}) == 1


@pytest.mark.slow
def test_analyze_gives_one_sentiment_per_hop_and_ends(scenarios) -> None:
    events = scenarios["first"]
    gapless(events)
    ends = [e.window.end for e in events if isinstance(e, SentimentEvent)]
    assert ends == pytest.approx([0.5 * (k + 1) for k in range(12)])
    last = events[-1]
    assert isinstance(last, SessionEvent) and (last.state, last.reason) == ("ended", "source ended")


@pytest.mark.slow
def test_stopping_early_stops_the_session(scenarios) -> None:
    for name in ("stopped", "left"):
        events = scenarios[name]
        gapless(events)
        last = events[-1]
        assert isinstance(last, SessionEvent) and last.state == "ended"
        assert last.reason.startswith("stopped:")
        windows = [e for e in events if isinstance(e, SentimentEvent)]
        assert 1 <= len(windows) < 60  # the 35 s sample has 70


@pytest.mark.slow
def test_analyze_a_push_source_fed_from_another_task(scenarios) -> None:
    events = scenarios["push"]
    gapless(events)
    sentiments = [e for e in events if isinstance(e, SentimentEvent)]
    assert len(sentiments) >= 5
    assert all(e.modalities["vision"].state == "missing" for e in sentiments)
    assert any(e.modalities["audio"].action == "used" for e in sentiments)
    # words recognised from the pushed audio (whether they reach a window before it closes
    # depends on how far the recogniser lags on the machine: the transcript events tell)
    assert any(isinstance(e, TranscriptEvent) and e.words for e in events)
    last = events[-1]
    assert isinstance(last, SessionEvent) and (last.state, last.reason) == ("ended", "source ended")


@pytest.mark.slow
def test_library_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "library.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert sum(" positive " in line or " negative " in line for line in lines) >= 10
    assert sum(line.startswith("session ") and " ended: " in line for line in lines) == 2
