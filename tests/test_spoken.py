"""Spoken training data: real MOSI transcripts through espeak-ng and the engine's own windows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from stream_mmsa.config import EngineConfig, TextConfig
from stream_mmsa.media.frames import AUDIO_RATE
from stream_mmsa.train.datasets import Sample, TextRecord, load_label_csv
from stream_mmsa.train.loading import make_text_encoder
from stream_mmsa.train.spoken import (
    Voice,
    breakdown,
    lagging,
    select_rows,
    spoken_dataset,
    utterance_audio,
    voice_for,
)
from stream_mmsa.windowing import window_count

MOSI = SHARED_DATA / "mosi" / "label.csv"
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def test_a_larger_limit_only_adds_rows() -> None:
    records = [TextRecord(str(i), f"text {i}", 0.0) for i in range(50)]
    assert select_rows(records, 10, 1) == select_rows(records, 30, 1)[:10]
    assert sorted(r.id for r in select_rows(records, 0, 1)) == sorted(r.id for r in records)


@needs_espeak
def test_speech_is_deterministic() -> None:
    first = utterance_audio("it was a really good movie")
    assert np.array_equal(first, utterance_audio("it was a really good movie"))
    assert len(first) > 2 * AUDIO_RATE


def test_voices_follow_the_utterance_id() -> None:
    ids = [f"clip_{i}" for i in range(40)]
    assert [voice_for(i) for i in ids] == [voice_for(i) for i in ids]  # seeded by the id
    assert len({voice_for(i).flags for i in ids}) > 30  # ... and varied across ids
    assert any(voice_for(i).reverb for i in ids) and not all(voice_for(i).reverb for i in ids)
    assert voice_for("clip_1", "fixed") == Voice()  # the old single voice


@needs_espeak
@pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")
def test_varied_speech_is_deterministic_and_levelled() -> None:
    voice = next(voice_for(f"c{i}") for i in range(50) if voice_for(f"c{i}").reverb)
    first = utterance_audio("what a wonderful film", voice)
    assert np.array_equal(first, utterance_audio("what a wonderful film", voice))
    assert abs(np.abs(first).max() - voice.gain) < 0.05  # peak level as drawn (plus noise)


def test_late_text_comes_from_an_earlier_window_of_the_utterance() -> None:
    windows = [{"index": i, "transcript": f"w{i}"} for i in range(10)]
    rng = np.random.default_rng(0)
    assert all(lagging(w, windows, 0.0, rng) is w for w in windows)
    lags = [w["index"] - lagging(w, windows, 1.0, rng)["index"] for w in windows[3:]]
    assert set(lags) <= {1, 2, 3} and len(set(lags)) > 1
    assert lagging(windows[0], windows, 1.0, rng) is None  # no earlier words yet
    far = [9 - lagging(windows[9], windows, 1.0, rng, hops=6)["index"] for _ in range(200)]
    assert set(far) == {1, 2, 3, 4, 5, 6}  # data.late_hops: each lag up to 6 hops drawn


@pytest.mark.slow
@needs_espeak
@pytest.mark.skipif(not MOSI.is_file(), reason="needs ../shared/data")
def test_windows_carry_recognised_text_audio_and_the_label(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path))
    records = load_label_csv(MOSI, "valid")[:2]
    engine = EngineConfig(threads=1)
    encoder = make_text_encoder(TextConfig())
    dims = {"text": 384, "audio": 35, "vision": 55}
    dataset = spoken_dataset(records, encoder, dims, engine, name="t", seed=0)

    for record in records:
        windows = [s for s in dataset.samples if s.id.startswith(f"{record.id}#")]
        duration = len(utterance_audio(record.text, voice_for(record.id))) / AUDIO_RATE
        assert 0 < len(windows) <= window_count(duration, engine.window.hop)
        assert all(s.label == record.label for s in windows)
        assert any("text" in s.features for s in windows), "ASR recognised no words"
        assert any("audio" in s.features for s in windows)
    assert any("vision" in s.features for s in dataset.samples), "the sample's face is used"
    # A second pass reads the cache: same samples, no new session.
    again = spoken_dataset(records, encoder, dims, engine, name="t", seed=0)
    assert [s.id for s in again.samples] == [s.id for s in dataset.samples]


def test_breakdown_groups_windows_by_words_and_utterances_by_length_and_wer() -> None:
    texts = [None, "good", "a very good film", "bad"]
    samples = [Sample(f"u{i // 2}#{i}", 1.0, {}, t) for i, t in enumerate(texts)]
    pred = np.array([-1.0, 1.0, 2.0, -0.5])
    label = np.array([1.0, 1.0, 1.0, 1.0])
    gold = {"u0": "good", "u1": " ".join(["word"] * 12)}
    lines = breakdown(pred, label, samples, gold)
    assert "| windows, 0 words | 1 | 0.0 | 2.000 |" in lines
    assert "| windows, 1-2 words | 2 | 50.0 | 0.750 |" in lines
    assert "| windows, 3-5 words | 1 | 100.0 | 1.000 |" in lines
    assert "| utterances, 0-10 words | 1 | 0.0 | 1.000 |" in lines  # mean of -1 and 1
    assert "| utterances, 11+ words | 1 | 100.0 | 0.250 |" in lines
    # u0's fullest recognised text is its gold one; u1's shares no word with it
    assert "| utterances recognised with WER ≤ 20 % | 1 | 0.0 | 1.000 |" in lines
    assert "| utterances recognised with WER > 20 % | 1 | 100.0 | 0.250 |" in lines
