"""Media sources: synthetic timing and gaps, file decoding, pacing, failures."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import av
import numpy as np
import pytest

from stream_mmsa.media.frames import AUDIO_RATE, AudioChunk, Frame, VideoFrame
from stream_mmsa.media.sources import pacing
from stream_mmsa.media.sources.base import Source, SourceError
from stream_mmsa.media.sources.file import FileSource
from stream_mmsa.media.sources.pacing import arrival
from stream_mmsa.media.sources.synthetic import SyntheticSource

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "media" / "sample.mp4"


def collect(source: Source, limit: int | None = None) -> list[Frame]:
    async def run() -> list[Frame]:
        frames: list[Frame] = []
        try:
            async for frame in source.frames():
                frames.append(frame)
                if limit is not None and len(frames) >= limit:
                    break
        finally:
            await source.close()
        return frames

    return asyncio.run(run())


def split(frames: list[Frame]) -> tuple[list[AudioChunk], list[VideoFrame]]:
    audio = [f for f in frames if isinstance(f, AudioChunk)]
    return audio, [f for f in frames if isinstance(f, VideoFrame)]


def write_clip(path: Path, *, audio: bool, video: bool, seconds: float = 1.0) -> Path:
    """A small real file written with PyAV: 8 fps 64x48 video and/or a 16 kHz tone."""
    with av.open(str(path), "w") as container:
        if video:
            stream = container.add_stream("mpeg4", rate=8)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for index in range(round(seconds * 8)):
                image = np.full((48, 64, 3), index * 20 % 255, dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        if audio:
            sound = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * AUDIO_RATE)) / 16e3)
            for start in range(0, len(tone), 1024):
                block = tone[None, start : start + 1024].astype(np.float32)
                frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
                frame.sample_rate, frame.pts = AUDIO_RATE, start
                container.mux(sound.encode(frame))
            container.mux(sound.encode())
    return path


def test_synthetic_timing_is_sample_exact() -> None:
    audio, video = split(collect(SyntheticSource(2.0, fps=10, chunk_ms=20)))
    assert len(audio) == 100 and all(len(c.samples) == 320 for c in audio)
    assert all(b.time == pytest.approx(a.end) for a, b in itertools.pairwise(audio))
    assert audio[-1].end == pytest.approx(2.0)
    assert [f.time for f in video] == pytest.approx([i / 10 for i in range(20)])
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in video)


def test_synthetic_frames_come_in_arrival_order() -> None:
    frames = collect(SyntheticSource(1.0, fps=30, chunk_ms=40))
    times = [arrival(f) for f in frames]
    assert times == sorted(times)


def test_synthetic_gaps_send_nothing() -> None:
    source = SyntheticSource(3.0, audio_gaps=[(1.0, 1.5)], video_gaps=[(2.0, 3.0)])
    audio, video = split(collect(source))
    assert not [c for c in audio if 1.0 <= c.time < 1.5]
    assert any(c.time < 1.0 for c in audio) and any(c.time >= 1.5 for c in audio)
    assert max(f.time for f in video) < 2.0


def test_synthetic_audio_kinds() -> None:
    samples = np.linspace(-0.5, 0.5, 8000, dtype=np.float32)
    audio, video = split(collect(SyntheticSource(1.0, audio=samples, video=None)))
    signal = np.concatenate([c.samples for c in audio])
    assert len(signal) == AUDIO_RATE and not video
    np.testing.assert_array_equal(signal[:8000], samples)
    assert not signal[8000:].any()  # padded with silence to the duration
    noise = split(collect(SyntheticSource(0.5, audio="noise", video=None, seed=3)))[0]
    again = split(collect(SyntheticSource(0.5, audio="noise", video=None, seed=3)))[0]
    np.testing.assert_array_equal(noise[0].samples, again[0].samples)
    silence = SyntheticSource(0.5, audio=None, video=[np.zeros((4, 4, 3), np.uint8)])
    assert not silence.has_audio and silence.has_video
    with pytest.raises(ValueError, match="audio must be"):
        SyntheticSource(1.0, audio="chirp")


def test_synthetic_cycles_given_images() -> None:
    images = [np.full((8, 8, 3), value, np.uint8) for value in (0, 1, 2)]
    _, video = split(collect(SyntheticSource(0.5, audio=None, video=images, fps=10)))
    assert [int(f.image[0, 0, 0]) for f in video] == [0, 1, 2, 0, 1]


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """What the pacer asks to sleep, in order; no real time passes."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        asked.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(pacing.asyncio, "sleep", fake_sleep)
    return asked


def test_realtime_pacing_sleeps_until_each_arrival(delays: list[float]) -> None:
    collect(SyntheticSource(2.0, realtime=True, fps=5, chunk_ms=100))
    assert len(delays) == 20 + 10  # one wait per frame
    # No real time passes under the fake sleep, so each wait is the frame's arrival time.
    assert np.all(np.diff(delays) > -0.01)
    assert delays[0] == pytest.approx(0.0, abs=0.05) and delays[-1] == pytest.approx(2.0, abs=0.05)


def test_realtime_pacing_follows_the_session_origin(delays: list[float]) -> None:
    """Frames are due at origin + arrival on the session's clock: a source that took 0.5 s
    to open hands over what is already due at once instead of running 0.5 s behind."""
    source = SyntheticSource(1.0, realtime=True, fps=5, chunk_ms=100)
    source.origin = time.monotonic() - 0.5
    collect(source)
    assert delays[:8] == [0.0] * 8  # arrivals up to 0.5 s: due already
    assert delays[-1] == pytest.approx(0.5, abs=0.05)


def test_realtime_pacing_takes_about_real_time() -> None:
    start = time.perf_counter()
    collect(SyntheticSource(0.6, realtime=True))
    assert 0.5 <= time.perf_counter() - start < 3.0  # generous: machines here are shared


def test_file_source_reads_the_sample() -> None:
    truth = json.loads(SAMPLE.with_suffix(".json").read_text())
    source = FileSource(SAMPLE, realtime=False)
    assert source.has_audio and source.has_video and source.name == "file:sample.mp4"
    frames = collect(source)
    audio, video = split(frames)
    assert all(c.sample_rate == AUDIO_RATE and c.samples.dtype == np.float32 for c in audio)
    assert all(c.samples.ndim == 1 and len(c.samples) == 640 for c in audio[:-1])
    for a, b in itertools.pairwise(audio):
        assert b.time == pytest.approx(a.end, abs=1e-6)  # contiguous
    assert min(audio[0].time, video[0].time) == 0.0
    assert audio[-1].end == pytest.approx(truth["duration"], abs=0.1)
    assert video[-1].time == pytest.approx(truth["duration"], abs=0.2)
    assert np.all(np.diff([f.time for f in video]) > 0)
    assert np.median(np.diff([f.time for f in video])) == pytest.approx(1 / 15, abs=1e-3)
    assert video[0].image.shape == (240, 320, 3) and video[0].image.dtype == np.uint8
    times = [arrival(f) for f in frames]
    assert times == sorted(times)


@pytest.mark.parametrize(("has_audio", "has_video"), [(True, False), (False, True)])
def test_file_source_with_one_stream(tmp_path: Path, has_audio: bool, has_video: bool) -> None:
    path = write_clip(tmp_path / "clip.mp4", audio=has_audio, video=has_video)
    source = FileSource(path, realtime=False)
    assert (source.has_audio, source.has_video) == (has_audio, has_video)
    audio, video = split(collect(source))
    assert bool(audio) == has_audio and bool(video) == has_video
    if has_audio:
        signal = np.concatenate([c.samples for c in audio])
        assert len(signal) == pytest.approx(AUDIO_RATE, abs=1100)  # AAC pads a frame
        assert np.abs(signal).max() == pytest.approx(0.3, abs=0.05)
    else:
        assert [round(f.time, 3) for f in video] == [i / 8 for i in range(8)]


def test_file_audio_keeps_its_gaps(tmp_path: Path) -> None:
    path = tmp_path / "gap.mka"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_f32le", rate=AUDIO_RATE, layout="mono")
        for index in [*range(10), *range(20, 30)]:  # blocks 10..19 (0.64 s) never sent
            block = np.full((1, 1024), 0.1, np.float32)
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate, frame.pts = AUDIO_RATE, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    audio, _ = split(collect(FileSource(path, realtime=False)))
    before = [c for c in audio if c.time < 1.0]
    after = [c for c in audio if c.time >= 1.0]
    assert before[-1].end == pytest.approx(0.64) and after[0].time == pytest.approx(1.28)


def test_corrupt_file_fails_fast_with_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(64_000))
    start = time.perf_counter()
    with pytest.raises(SourceError, match=r"broken\.mp4") as caught:
        FileSource(path)
    assert time.perf_counter() - start < 2.0
    assert caught.value.where == str(path) and caught.value.reason
    with pytest.raises(SourceError, match="cannot open"):
        FileSource(tmp_path / "missing.mp4")


def test_file_without_media_streams_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "subtitles.srt"
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    with pytest.raises(SourceError, match="no audio or video stream"):
        FileSource(path)


def test_file_source_stops_cleanly_midway() -> None:
    frames = collect(FileSource(SAMPLE, realtime=False), limit=10)
    assert len(frames) == 10


def test_file_source_realtime_paces_to_the_wall_clock() -> None:
    async def run() -> float:
        source = FileSource(SAMPLE, realtime=True)
        start = time.perf_counter()
        try:
            async for frame in source.frames():
                if frame.time >= 0.8:
                    break
        finally:
            await source.close()
        return time.perf_counter() - start

    assert 0.6 <= asyncio.run(run()) < 4.0  # generous: machines here are shared
