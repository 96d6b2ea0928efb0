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
    )
    assert body.startswith(
        "`python -m stream_mmsa.train.continuous --config configs/engine.yaml --readme "
        "--realtime --against engine.window.text_context=0` (load "
    )
    assert "| --fast, per window (1165) | 64.00 |" in body
    assert "| real time, per utterance (223) |" in body
    assert "window MAE -0.01 [-0.03, +0.01]" in body and "paired over 223 utterances" in body
    assert "\n\nreal time, minus `engine.window.text_context=0`, paired" in body
