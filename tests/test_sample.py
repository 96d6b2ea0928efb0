"""The bundled sample clip agrees with its ground-truth sidecar, and the extractors find it."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stream_mmsa.features.acoustic import AcousticExtractor
from stream_mmsa.features.base import Extractor
from stream_mmsa.features.face import FaceExtractor
from stream_mmsa.media.frames import AudioChunk, VideoFrame
from stream_mmsa.media.sources.file import FileSource

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "media" / "sample.mp4"
TRUTH = json.loads(SAMPLE.with_suffix(".json").read_text())


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def stretch(item: dict) -> tuple[float, float]:
    return item["start"], item["end"]


@pytest.fixture(scope="module")
def decoded() -> tuple[np.ndarray, list[VideoFrame]]:
    async def run() -> tuple[np.ndarray, list[VideoFrame]]:
        source = FileSource(SAMPLE, realtime=False)
        frames = [frame async for frame in source.frames()]
        await source.close()
        audio = [f.samples for f in frames if isinstance(f, AudioChunk)]
        return np.concatenate(audio), [f for f in frames if isinstance(f, VideoFrame)]

    return asyncio.run(run())


def test_sidecar_timeline_is_consistent() -> None:
    assert SAMPLE.stat().st_size < 1.5e6
    duration, sentences = TRUTH["duration"], TRUTH["sentences"]
    assert 30 <= duration <= 40
    assert {s["polarity"] for s in sentences} == {"positive", "negative"}
    spans = [stretch(s) for s in sentences]
    assert all(0 <= a < b <= duration for a, b in spans)
    assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
    (silence,) = [stretch(s) for s in TRUTH["silence"]]
    (no_face,) = [stretch(s) for s in TRUTH["no_face"]]
    assert silence[1] - silence[0] >= 2.5 and no_face[1] - no_face[0] >= 2.5
    assert not any(overlap(silence, span) for span in spans)
    assert any(overlap(no_face, span) > 1.0 for span in spans)  # vision drops during speech
    assert not overlap(silence, no_face)


def test_sidecar_matches_the_media(decoded: tuple[np.ndarray, list[VideoFrame]]) -> None:
    audio, video = decoded
    assert len(audio) / 16_000 == pytest.approx(TRUTH["duration"], abs=0.1)
    assert len(video) / TRUTH["video"]["fps"] == pytest.approx(TRUTH["duration"], abs=0.2)
    assert video[0].image.shape == (TRUTH["video"]["height"], TRUTH["video"]["width"], 3)

    def rms(span: tuple[float, float]) -> float:
        return float(np.sqrt(np.mean(audio[int(span[0] * 16_000) : int(span[1] * 16_000)] ** 2)))

    (silence,) = [stretch(s) for s in TRUTH["silence"]]
    assert rms(silence) < 0.005
    assert all(rms(stretch(s)) > 0.03 for s in TRUTH["sentences"])


async def run_extractor(extractor: Extractor, realtime: bool) -> list[tuple[float, float, str]]:
    source = FileSource(SAMPLE, realtime=realtime)
    absent = []
    try:
        async for frame in source.frames():
            if extractor.accepts(frame):
                absent += (await extractor.push(frame)).absent
        absent += (await extractor.flush()).absent
    finally:
        await extractor.close()
        await source.close()
    return absent


@pytest.mark.slow
def test_acoustic_finds_the_silence() -> None:
    absent = asyncio.run(run_extractor(AcousticExtractor(), realtime=False))
    (silence,) = [stretch(s) for s in TRUTH["silence"]]
    found = sum(overlap(silence, (a, b)) for a, b, _ in absent)
    assert found >= 0.75 * (silence[1] - silence[0])  # the hangover delays its start
    for sentence in TRUTH["sentences"]:
        middle = (sentence["start"] + 0.3, sentence["end"] - 0.3)
        assert sum(overlap(middle, (a, b)) for a, b, _ in absent) < 0.5, sentence["text"]


@pytest.mark.slow
def test_face_finds_the_face_leaving(decoded: tuple[np.ndarray, list[VideoFrame]]) -> None:
    # The frames around the pan, each one drained before the next (offline, no drops),
    # rather than the whole clip in real time.
    (no_face,) = [stretch(s) for s in TRUTH["no_face"]]
    frames = [f for f in decoded[1] if no_face[0] - 2 <= f.time <= no_face[1] + 2]

    async def run() -> list[tuple[float, float, str]]:
        extractor, absent = FaceExtractor(), []
        try:
            for frame in frames:
                absent += (await extractor.push(frame)).absent
                absent += (await extractor.flush()).absent
        finally:
            await extractor.close()
        return absent

    absent = asyncio.run(run())
    found = sum(overlap(no_face, (a, b)) for a, b, _ in absent)
    assert found >= 0.85 * (no_face[1] - no_face[0])
    elsewhere = sum(b - a for a, b, _ in absent) - found
    assert elsewhere < 0.8  # partial faces at the edges of the pan, nothing more


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_make_sample_rebuilds_the_same_timeline() -> None:
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "scripts/make_sample.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    audio, sentences, silence = script.build_audio()  # the speech part; video is pure geometry
    assert sentences == TRUTH["sentences"] and [silence] == TRUTH["silence"]
    assert round(len(audio) / script.RATE, 3) == TRUTH["duration"]
