"""Acoustic extractor: layout, pitch, speech activity, streaming invariance, gaps."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from faster_whisper.vad import get_vad_model

from stream_mmsa.features.acoustic import (
    DIM,
    STEP,
    AcousticExtractor,
    SpeechDetector,
    frame_features,
    yin,
)
from stream_mmsa.features.base import FeatureUpdate
from stream_mmsa.media.frames import AUDIO_RATE, AudioChunk, VideoFrame
from stream_mmsa.media.sources.synthetic import SyntheticSource

PITCH, VOICING, SPEECH = 2, 3, 4


def extract(source: SyntheticSource, extractor: AcousticExtractor | None = None) -> FeatureUpdate:
    """Every update of the source merged (absent stretches joined when they touch)."""
    extractor = extractor or AcousticExtractor()

    async def run() -> FeatureUpdate:
        total = FeatureUpdate(extractor.modality)
        updates = [await extractor.push(f) async for f in source.frames()]
        for update in [*updates, await extractor.flush()]:
            assert update.watermark >= total.watermark
            total.vectors += update.vectors
            for start, end, reason in update.absent:
                if total.absent and total.absent[-1][1:] == (start, reason):
                    total.absent[-1] = (total.absent[-1][0], end, reason)
                else:
                    total.absent.append((start, end, reason))
            total.watermark = update.watermark
        return total

    return asyncio.run(run())


def tone(hz: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * 16e3)) / 16e3)).astype(
        np.float32
    )


def test_layout_and_grid() -> None:
    total = extract(SyntheticSource(2.0, audio="tone", video=None))
    assert DIM == AcousticExtractor.dim == 35 and AcousticExtractor.modality == "audio"
    assert all(v.vector.shape == (DIM,) and v.vector.dtype == np.float32 for v in total.vectors)
    starts = [v.start for v in total.vectors]
    assert starts == pytest.approx([i * STEP for i in range(len(starts))])
    assert total.vectors[-1].end == pytest.approx(2.0) and total.watermark == pytest.approx(2.0)
    assert np.isfinite(np.stack([v.vector for v in total.vectors])).all()


@pytest.mark.parametrize("hz", [90.0, 150.0, 220.0, 310.0, 450.0])
def test_yin_finds_the_pitch_of_a_tone(hz: float) -> None:
    frames = np.lib.stride_tricks.sliding_window_view(tone(hz, 0.2), 640)[::128]
    f0, aperiodicity = yin(frames)
    assert np.median(f0) == pytest.approx(hz, rel=0.01)
    assert np.all(aperiodicity < 0.1)


def test_tone_features() -> None:
    total = extract(SyntheticSource(1.5, audio="tone", tone_hz=200.0, video=None))
    steps = np.stack([v.vector for v in total.vectors[:-1]])  # the last one is zero-padded
    assert steps[:, PITCH] == pytest.approx(np.log2(200 / 100), abs=0.02)
    assert steps[:, VOICING].min() > 0.9
    assert steps[:, 0] == pytest.approx(np.log10(0.3 / np.sqrt(2)), abs=0.05)  # log10 RMS
    assert steps[:, 6] == pytest.approx(200 / 8000, abs=0.01)  # centroid sits on the tone


def test_silence_is_no_speech_but_still_has_vectors() -> None:
    total = extract(SyntheticSource(2.0, audio="silence", video=None))
    assert len(total.vectors) == int(np.ceil(2.0 / STEP))
    assert total.absent == [(0.0, pytest.approx(2.0), "no speech")]
    steps = np.stack([v.vector for v in total.vectors])
    assert np.all(steps[:, PITCH] == 0) and np.all(steps[:, VOICING] == 0)


def test_noise_is_unvoiced_and_not_speech() -> None:
    total = extract(SyntheticSource(2.0, audio="noise", amplitude=0.1, video=None))
    steps = np.stack([v.vector for v in total.vectors])
    assert steps[:, VOICING].mean() < 0.5 and steps[:, 7].mean() > 0.5  # flat spectrum
    assert total.absent and total.absent[0][2] == "no speech"


def test_streamed_vad_matches_faster_whisper() -> None:
    rng = np.random.default_rng(0)
    audio = (0.02 * rng.standard_normal(512 * 30)).astype(np.float32)
    audio[512 * 10 : 512 * 20] += tone(180, 512 * 10 / 16e3)
    detector = SpeechDetector()
    streamed = np.concatenate([detector(audio[i : i + 1536]) for i in range(0, len(audio), 1536)])
    batch = get_vad_model()(audio.copy())  # it zeroes the last block's tail in place: skip it
    np.testing.assert_allclose(streamed[:-1], batch[:-1], atol=1e-5)
    assert streamed[10:20].min() > 0.3 > streamed[:10].max()


def test_features_do_not_depend_on_chunking() -> None:
    rng = np.random.default_rng(1)
    audio = (tone(150, 3.0) + 0.05 * rng.standard_normal(48_000)).astype(np.float32)
    small = extract(SyntheticSource(3.0, audio=audio, video=None, chunk_ms=20))
    large = extract(SyntheticSource(3.0, audio=audio, video=None, chunk_ms=1500))  # in a thread
    assert len(small.vectors) == len(large.vectors)
    for a, b in zip(small.vectors, large.vectors, strict=True):
        assert (a.start, a.end) == pytest.approx((b.start, b.end))
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-4)


def test_a_gap_in_the_input_is_no_audio() -> None:
    source = SyntheticSource(3.0, audio="tone", video=None, audio_gaps=[(1.0, 1.6)])
    total = extract(source)
    gaps = [(start, end) for start, end, reason in total.absent if reason == "no audio"]
    assert gaps == [(pytest.approx(1.0), pytest.approx(1.6))]
    assert not [v for v in total.vectors if 1.0 < (v.start + v.end) / 2 < 1.6]
    assert total.vectors[-1].end == pytest.approx(3.0)


def test_speech_onsets_and_hangover() -> None:
    """Speech steps from a stand-in VAD; checks the reporting, not Silero."""
    extractor = AcousticExtractor(hangover=0.3)
    speech_prob = np.zeros(40)
    speech_prob[10:20] = 0.9  # steps 10..19 are speech

    class FakeVad:
        def __call__(self, audio: np.ndarray) -> np.ndarray:
            done, steps = extractor._done // 1536, len(audio) // 1536
            return np.repeat(speech_prob[done : done + steps], 3)

        def reset(self) -> None:
            pass

    extractor._speech = FakeVad()  # type: ignore[assignment]
    total = extract(SyntheticSource(40 * STEP, audio="silence", video=None), extractor)
    assert total.absent == [
        (0.0, pytest.approx(10 * STEP), "no speech"),
        (pytest.approx(24 * STEP), pytest.approx(40 * STEP), "no speech"),  # 0.3 s hangover
    ]


def test_rejects_video() -> None:
    extractor = AcousticExtractor()
    frame = VideoFrame(np.zeros((2, 2, 3), np.uint8), 0.0)
    assert not extractor.accepts(frame)
    assert extractor.accepts(AudioChunk(np.zeros(1, np.float32), 0.0))
    with pytest.raises(TypeError, match="AudioChunk"):
        asyncio.run(extractor.push(frame))


def test_frame_features_is_vectorised_per_step() -> None:
    audio = np.zeros(5 * 1536 + 512, np.float32)
    assert frame_features(audio, 5).shape == (5, DIM)
    assert AUDIO_RATE * STEP == 1536
