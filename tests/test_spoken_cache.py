"""The spoken corpus's cache follows the recogniser's settings, not just its model name."""

from __future__ import annotations

import pytest

from stream_mmsa.config import EngineConfig
from stream_mmsa.features.asr import AsrConfig
from stream_mmsa.train import spoken


def test_cache_moves_when_the_recogniser_settings_change(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = EngineConfig()
    before = spoken.cache_dir(engine)
    assert spoken.cache_dir(engine) == before  # stable across calls and processes' order
    changed = AsrConfig(step_s=AsrConfig().step_s + 0.5, max_pending_s=None)
    monkeypatch.setattr(spoken, "transcript_config", lambda config, realtime: changed)
    assert spoken.cache_dir(engine) != before
