"""MOSI valid as one continuous talk: each window is scored against the utterance it ends in."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from stream_mmsa.bench.speech import MOSI_LABELS, espeak_available, mosi_rows
from stream_mmsa.demo import AFTER_S, HEARD_S
from stream_mmsa.train import continuous


@pytest.mark.slow
@pytest.mark.data
def test_a_short_talk_is_scored_window_by_window_against_its_utterances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_mmsa.config import EngineConfig

    if not MOSI_LABELS.exists():
        pytest.skip("needs ../shared/data (MOSI transcripts)")
    if not espeak_available():
        pytest.skip("needs espeak-ng")
    monkeypatch.setattr(continuous, "cache_root", lambda: tmp_path)
    engine = EngineConfig()
    pred, label, groups = continuous.score_talk(engine, duration_s=12.0)
    _, utterances = continuous.continuous_clip(12.0)  # made once: the same talk
    labels = {row["id"]: row["label"] for row in mosi_rows()}
    assert len(utterances) >= 2 and set(groups) <= {u["id"] for u in utterances}
    hop = engine.window.hop
    for u in utterances:
        ends = math.floor((u["end"] + AFTER_S) / hop) - math.ceil((u["start"] + HEARD_S) / hop)
        assert len(groups.get(u["id"], [])) == max(0, ends + 1), u  # every window, once
        assert all(label[i] == labels[u["id"]] for i in groups.get(u["id"], []))
    assert len(groups) >= 2 and np.isfinite(pred).all() and np.abs(pred).max() <= 3
    live = continuous.score_talk(engine, duration_s=12.0, realtime=True)  # 12 s of wall time
    assert live[2] == groups and np.isfinite(live[0]).all()  # every window on cadence, live too


def test_readme_block_names_the_command_and_the_paired_intervals() -> None:
    metrics = {"Non0_acc_2": 0.64, "Non0_F1_score": 0.64, "Has0_acc_2": 0.63}
    metrics |= {"Mult_acc_7": 0.3, "MAE": 1.17, "Corr": 0.4}
    levels = {"window": {**metrics, "count": 1165}, "utterance": {**metrics, "count": 223}}
    interval = {"difference": -0.01, "ci95_low": -0.03, "ci95_high": 0.01}
    difference = {"window MAE": interval, "utterances": {"count": 223.0}}
    rows = {"--fast": levels, "real time": levels}
    body = continuous.readme_block(
        rows,
        Path("engine.pt"),
        [],
        ["engine.window.text_context=0"],
        {"--fast": difference, "real time": difference},
        {
            "behind": {
                "windows": 3,
                "share": 0.5,
                "fast_acc": 0.7,
                "fast_mae": 1.0,
                "live_acc": 0.6,
                "live_mae": 1.2,
                "words_short": 2.0,
                "gap_points": 5.0,
            }
        },
    )
    assert body.startswith(
        "`python -m stream_mmsa.train.continuous --config configs/engine.yaml --readme "
        "--realtime --against engine.window.text_context=0` (load "
    )
    assert "| --fast, per window (1165) | 64.00 |" in body
    assert "| real time, per utterance (223) |" in body
    assert "window MAE -0.01 [-0.03, +0.01]" in body and "paired over 223 utterances" in body
    assert "\n\nreal time, minus `engine.window.text_context=0`, paired" in body
    assert (
        "| a beginning of the --fast text (words not yet heard) | 3 (50%) | 70.0 / 1.000 " in body
    )


def test_text_relation_compares_words_without_case_or_punctuation() -> None:
    assert continuous.text_relation("I loved it.", "i loved it") == "same"
    assert continuous.text_relation("I loved", "I loved it.") == "behind"
    assert continuous.text_relation("", "I loved it.") == "behind"
    assert continuous.text_relation("I hated it", "I loved it.") == "other words"
    assert continuous.text_relation("What a waste. I", "I loved it.") == "starts elsewhere"


def test_text_breakdown_parts_add_up_to_the_accuracy_gap() -> None:
    from stream_mmsa.train.metrics import mosi_metrics

    label = np.array([2.0, 2.0, -1.0, -1.0, 0.0, 1.5], np.float32)
    fast = np.array([1.0, 1.5, -0.5, -2.0, 0.3, 1.0], np.float32)
    live = np.array([1.0, -0.5, 0.5, -2.0, -0.3, -1.0], np.float32)
    groups = {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    fast_texts = ["so good", "so good here", "bad", "bad film", "ok", "fine"]
    live_texts = ["so good", "so", "the ending bad", "bad movie", "", "nice"]
    breakdown = continuous.text_breakdown(
        ((fast, label, groups), fast_texts), ((live, label, groups), live_texts)
    )
    assert list(breakdown) == ["same", "behind", "other words", "starts elsewhere"]
    assert [b["windows"] for b in breakdown.values()] == [1, 2, 1, 2]
    assert breakdown["behind"]["words_short"] == 1.5  # "so" of 3 words; "" of 1
    gap = mosi_metrics(fast, label)["Non0_acc_2"] - mosi_metrics(live, label)["Non0_acc_2"]
    parts = sum(b["gap_points"] for b in breakdown.values())
    assert abs(parts - 100 * gap) < 1e-6 and gap > 0
    lines = continuous.breakdown_table(breakdown)
    assert lines[2].startswith("| the same words | 1 (17%) | 100.0 / 1.000 | 100.0 / 1.000 |")
    with pytest.raises(ValueError, match="cannot pair"):
        continuous.text_breakdown(
            ((fast, label, groups), fast_texts), ((live, label, {"a": [0]}), live_texts)
        )
