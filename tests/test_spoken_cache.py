"""The spoken corpus's cache follows the recogniser's settings, not just its model name."""

from __future__ import annotations

import pytest

from stream_mmsa.config import EngineConfig
from stream_mmsa.features.asr import AsrConfig
from stream_mmsa.train import spoken
from stream_mmsa.train.readme import write_block


def test_cache_moves_when_the_recogniser_settings_change(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = EngineConfig()
    before = spoken.cache_dir(engine)
    assert spoken.cache_dir(engine) == before  # stable across calls and processes' order
    changed = AsrConfig(step_s=AsrConfig().step_s + 0.5, max_pending_s=None)
    monkeypatch.setattr(spoken, "transcript_config", lambda config, realtime: changed)
    assert spoken.cache_dir(engine) != before


def test_a_beam_search_has_its_own_cache() -> None:
    engine = EngineConfig()
    greedy = spoken.cache_dir(engine)
    assert spoken.cache_dir(engine.model_copy(update={"asr_beam_size": 5})) != greedy


def test_voices_have_their_own_cache() -> None:
    engine = EngineConfig()
    assert spoken.cache_dir(engine, "fixed") != spoken.cache_dir(engine, "varied")


def test_readme_block_lists_each_condition_per_window_and_utterance(tmp_path) -> None:
    metrics = {"Non0_acc_2": 0.7, "Non0_F1_score": 0.7, "Has0_acc_2": 0.69}
    metrics |= {"Mult_acc_7": 0.3, "MAE": 1.1, "Corr": 0.5}
    level = {"window": {**metrics, "count": 20}, "utterance": {**metrics, "count": 3}}
    body = spoken.readme_block(
        {name: level for name in spoken.CONDITIONS}, tmp_path / "m.pt", "varied"
    )
    assert body.startswith("`python -m stream_mmsa.train.spoken eval --readme` (load ")
    assert body.count("| text late, per ") == 2 and "| full model, per utterance (3) |" in body
    interval = {"difference": -0.01, "ci95_low": -0.03, "ci95_high": 0.01}
    difference = {"window MAE": interval, "utterances": {"count": 3.0}}
    rule = ["engine.window.sentence_min_words=0"]
    against = spoken.readme_block({}, tmp_path / "m.pt", "varied", difference, None, rule)
    assert "eval --readme --against engine.window.sentence_min_words=0` (load " in against
    beam, cost = ["engine.asr_beam_size=5"], ["| recognised | 77.7 | 1.004 | 28.8 % |"]
    greedy = ["engine.asr_beam_size=1"]
    tried = spoken.readme_block(
        {}, tmp_path / "m.pt", "varied", difference, None, greedy, None, beam, cost
    )
    assert "--set engine.asr_beam_size=5 --breakdown --against engine.asr_beam_size=1` (" in tried
    assert "\n| recognised | 77.7 | 1.004 | 28.8 % |\n" in tried
    assert "`engine.asr_beam_size=5` minus `engine.asr_beam_size=1`, paired over 3" in tried
    assert "minus `engine.window.sentence_min_words=0`, paired over 3 utterances" in against
    mosei = tmp_path / "mosei" / "label.csv"
    other = spoken.readme_block({}, tmp_path / "m.pt", "varied", valid=mosei)
    assert f"eval --readme --valid {mosei.as_posix()}` (load " in other
    assert "on MOSEI **valid** (not the selection set" in other
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- spoken-mosi -->\nold\n<!-- /spoken-mosi -->\nb\n")
    assert write_block(readme, "spoken-mosi", body) and "old" not in readme.read_text()
