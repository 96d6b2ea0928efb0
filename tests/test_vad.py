"""The session's one VAD: Silero streamed frame by frame, and the track that labels chunks."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.vad import get_vad_model

from stream_mmsa.features.vad import SileroVad, SpeechTrack
from stream_mmsa.media.frames import AUDIO_RATE, AudioChunk

FRAME_S = 512 / AUDIO_RATE


class Counting:
    """Returns each frame's running index as its 'probability' and records what it was fed."""

    frame_samples = 512

    def __init__(self) -> None:
        self.fed: list[np.ndarray] = []
        self.resets = self._rest = self._count = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        self.fed.append(samples)
        total = self._rest + len(samples)
        n, self._rest = divmod(total, self.frame_samples)
        out = np.arange(self._count, self._count + n, dtype=np.float32)
        self._count += n
        return out

    def reset(self) -> None:
        self._rest = self._count = 0
        self.resets += 1


def chunks(seconds: float, start: float = 0.0, size: int = 640) -> list[AudioChunk]:
    audio = np.random.default_rng(0).normal(0, 0.1, round(seconds * AUDIO_RATE)).astype(np.float32)
    return [
        AudioChunk(audio[i : i + size], start + i / AUDIO_RATE) for i in range(0, len(audio), size)
    ]


def test_streamed_silero_matches_faster_whisper() -> None:
    rng = np.random.default_rng(0)
    audio = (0.02 * rng.standard_normal(512 * 30)).astype(np.float32)
    audio[512 * 10 : 512 * 20] += np.sin(2 * np.pi * 180 * np.arange(512 * 10) / 16e3) * 0.3
    vad = SileroVad()
    streamed = np.concatenate([vad(audio[i : i + 700]) for i in range(0, len(audio), 700)])
    batch = get_vad_model()(audio.copy())  # it zeroes the last block's tail in place: skip it
    np.testing.assert_allclose(streamed[:-1], np.ravel(batch)[:-1], atol=1e-5)
    assert streamed[10:20].min() > 0.3 > streamed[:10].max()


def test_each_chunk_gets_the_frames_it_completes_with_their_times() -> None:
    track = SpeechTrack(Counting())
    labelled = [track.label(c) for c in chunks(1.0, start=5.0)]  # 40 ms chunks, 32 ms frames
    probs = np.concatenate([c.speech.probs for c in labelled])
    ends = np.concatenate([c.speech.ends() for c in labelled])
    assert probs.tolist() == list(range(31))  # every frame once, in order
    assert ends == pytest.approx(5.0 + FRAME_S * np.arange(1, 32))
    for chunk in labelled:  # a frame is handed over by the chunk its last sample is in
        assert all(chunk.time < e <= chunk.end + 1e-9 for e in chunk.speech.ends())
        assert chunk.speech.frame_s == FRAME_S


def test_short_gaps_are_fed_as_silence_long_ones_restart() -> None:
    detector = Counting()
    track = SpeechTrack(detector, max_gap_s=1.0)
    track.push(AudioChunk(np.ones(512, np.float32), 0.0))
    second = track.push(AudioChunk(np.ones(512, np.float32), 0.032 + 0.064))  # 64 ms gap
    assert len(detector.fed[-1]) == 512 + 1024 and not detector.fed[-1][:1024].any()
    assert second.ends() == pytest.approx([0.064, 0.096, 0.128])  # same grid, gap included
    third = track.push(AudioChunk(np.ones(512, np.float32), 5.0))  # > 1 s: a new grid
    assert detector.resets == 2 and third.ends() == pytest.approx([5.032])
    assert third.probs.tolist() == [0.0]


def test_overlapping_audio_is_dropped() -> None:
    detector = Counting()
    track = SpeechTrack(detector)
    track.push(AudioChunk(np.ones(1024, np.float32), 0.0))
    frames = track.push(AudioChunk(np.ones(1024, np.float32), 0.032))  # half of it is old
    assert len(detector.fed[-1]) == 512 and frames.ends() == pytest.approx([0.096])


def test_frames_do_not_depend_on_chunking() -> None:
    def labelled(size: int) -> tuple[np.ndarray, np.ndarray]:
        track = SpeechTrack(SileroVad())
        out = [track.push(c) for c in chunks(3.0, size=size)]
        return np.concatenate([f.probs for f in out]), np.concatenate([f.ends() for f in out])

    small, large = labelled(320), labelled(24_000)
    np.testing.assert_allclose(small[0], large[0], atol=1e-5)
    assert small[1] == pytest.approx(large[1])


def test_wrong_chunks_raise_clear_errors() -> None:
    track = SpeechTrack(Counting())
    with pytest.raises(ValueError, match="16000 Hz"):
        track.push(AudioChunk(np.zeros(800, np.float32), 0.0, sample_rate=8000))
    with pytest.raises(ValueError, match="mono"):
        track.push(AudioChunk(np.zeros((800, 2), np.float32), 0.0))
    with pytest.raises(ValueError, match="float"):
        track.push(AudioChunk(np.zeros(800, np.int16), 0.0))
