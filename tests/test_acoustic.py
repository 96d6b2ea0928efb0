"""Acoustic extractor: layout, pitch, speech activity, streaming invariance, gaps."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stream_mmsa.features.acoustic import DIM, STEP, AcousticExtractor, frame_features, yin
from stream_mmsa.features.base import FeatureUpdate, FeatureVector
from stream_mmsa.features.vad import SpeechTrack
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
    audio = tone(hz, 0.2)
    f0, aperiodicity = yin(audio, (len(audio) - 640) // 128 + 1)
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


class ScriptedVad:
    """Speech probability per 32 ms frame from a script, by frame count: a stand-in for Silero."""

    frame_samples = 512

    def __init__(self, script: np.ndarray) -> None:
        self.script = script
        self.frames = self.rest = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        total = self.rest + len(samples)
        n, self.rest = divmod(total, self.frame_samples)
        out = self.script[self.frames : self.frames + n]
        self.frames += n
        return out.astype(np.float32)

    def reset(self) -> None:
        self.frames = self.rest = 0


def test_speech_onsets_and_hangover() -> None:
    """Speech steps from a stand-in VAD; checks the reporting, not Silero."""
    speech_prob = np.zeros(40)
    speech_prob[10:20] = 0.9  # steps 10..19 are speech: three VAD frames each
    extractor = AcousticExtractor(hangover=0.3, vad=ScriptedVad(np.repeat(speech_prob, 3)))
    total = extract(SyntheticSource(40 * STEP, audio="silence", video=None), extractor)
    assert total.absent == [
        (0.0, pytest.approx(10 * STEP), "no speech"),
        (pytest.approx(24 * STEP), pytest.approx(40 * STEP), "no speech"),  # 0.3 s hangover
    ]
    speech = np.array([v.vector[SPEECH] for v in total.vectors])
    np.testing.assert_allclose(speech, speech_prob, atol=1e-6)


class NoVad(ScriptedVad):
    def __call__(self, samples: np.ndarray) -> np.ndarray:
        raise AssertionError("the extractor ran a VAD of its own")


def extract_labelled(
    source: SyntheticSource, track: SpeechTrack
) -> list[tuple[float, float, float]]:
    """(start, end, speech) of every step, the chunks labelled by `track` as the engine does."""

    async def run() -> list[FeatureVector]:
        extractor = AcousticExtractor(vad=NoVad(np.zeros(0)))
        vectors = []
        async for frame in source.frames():
            vectors += (await extractor.push(track.label(frame))).vectors
        return vectors + (await extractor.flush()).vectors

    return [(v.start, v.end, float(v.vector[SPEECH])) for v in asyncio.run(run())]


def test_speech_carried_by_the_chunks_replaces_the_own_vad() -> None:
    """In the engine the session's VAD labels the chunks: the extractor runs none itself."""
    script = np.zeros(120, np.float32)
    script[30:60] = 0.9
    script[61] = 0.6
    steps = extract_labelled(
        SyntheticSource(40 * STEP, audio="silence", video=None), SpeechTrack(ScriptedVad(script))
    )
    assert [p for _, _, p in steps] == pytest.approx(script.reshape(40, 3).max(axis=1).tolist())


def test_a_step_takes_every_vad_frame_it_overlaps() -> None:
    """After a gap the two grids no longer line up: a step takes the frames it touches."""
    script = np.zeros(100, np.float32)
    frame = 61  # [1.952, 1.984): across the boundary of two steps after the gap
    script[frame] = 0.8
    source = SyntheticSource(2.2, audio="silence", video=None, audio_gaps=[(1.0, 1.2)])
    steps = extract_labelled(source, SpeechTrack(ScriptedVad(script)))  # the VAD fills the gap
    start, end = frame * 0.032, (frame + 1) * 0.032
    touched = [p for s, e, p in steps if s < end and e > start]
    assert len(touched) == 2 and touched == pytest.approx([0.8, 0.8])
    assert sum(p for _, _, p in steps) == pytest.approx(1.6)


def test_rejects_video() -> None:
    extractor = AcousticExtractor()
    frame = VideoFrame(np.zeros((2, 2, 3), np.uint8), 0.0)
    assert not extractor.accepts(frame)
    assert extractor.accepts(AudioChunk(np.zeros(1, np.float32), 0.0))
    with pytest.raises(TypeError, match="AudioChunk"):
        asyncio.run(extractor.push(frame))


def test_shared_sums_give_each_frames_own_energy_and_crossings() -> None:
    """Energy and zero crossings come from one pass over the samples: check them against
    each 25 ms frame computed on its own."""
    rng = np.random.default_rng(2)
    audio = (tone(170, 0.5) + 0.05 * rng.standard_normal(8000)).astype(np.float32)
    audio[3000:3500] = 0.0  # digital silence after loud audio: no negative energy
    steps = (len(audio) - 512) // 1536
    frames = np.lib.stride_tricks.sliding_window_view(audio, 400)[::128][: steps * 12]
    log_rms = np.log10(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-5)
    crossings = np.mean(np.signbit(frames[:, 1:]) != np.signbit(frames[:, :-1]), axis=1)
    out = frame_features(audio, steps)
    np.testing.assert_allclose(out[:, 0], log_rms.reshape(steps, 12).mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(out[:, 1], log_rms.reshape(steps, 12).std(axis=1), atol=1e-5)
    np.testing.assert_allclose(out[:, 5], crossings.reshape(steps, 12).mean(axis=1), atol=1e-6)


def test_frame_features_is_vectorised_per_step() -> None:
    audio = np.zeros(5 * 1536 + 512, np.float32)
    assert frame_features(audio, 5).shape == (5, DIM)
    assert AUDIO_RATE * STEP == 1536
