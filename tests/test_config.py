"""Typed configuration: files, overrides and the errors people see."""

from pathlib import Path

import pytest

from stream_mmsa.config import CONFIG_DIR, ConfigError, load_config, parse_overrides


def test_every_bundled_config_loads() -> None:
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        assert load_config(path).name


def test_overrides_are_typed_and_nested() -> None:
    config = load_config("synthetic.yaml", ["train.lr=3e-4", "model.use_prompts=false"])
    assert config.train.lr == pytest.approx(3e-4)
    assert config.model.use_prompts is False
    assert parse_overrides(["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}


def test_unknown_key_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"train\.lrate: unknown key .*valid keys here: .*lr"):
        load_config(None, ["train.lrate=1"])


def test_bad_value_says_what_was_given() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs.*got 0"):
        load_config(None, ["train.epochs=0"])


def test_malformed_override_and_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_overrides(["no-equals-sign"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Path("nope.yaml"))


def test_real_data_needs_paths(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  kind: label_csv\n")
    with pytest.raises(ConfigError, match="train_paths"):
        load_config(config)


def test_text_repeats_need_one_positive_count_per_text_path() -> None:
    base = ["data.kind=spoken", "data.train_paths=[a.csv]", "data.text_paths=[a.csv, b.csv]"]
    assert load_config(None, [*base, "data.text_repeats=[4, 1]"]).data.text_repeats == [4, 1]
    with pytest.raises(ConfigError, match=r"one count per entry of data\.text_paths"):
        load_config(None, [*base, "data.text_repeats=[4]"])
    with pytest.raises(ConfigError, match="must be positive"):
        load_config(None, [*base, "data.text_repeats=[0, 1]"])


def test_the_recogniser_step_and_beam_come_from_the_engine_config() -> None:
    from stream_mmsa.extractors import transcript_config

    engine = load_config(CONFIG_DIR / "engine.yaml", ["engine.asr_step_s=0.5"]).engine
    assert transcript_config(engine, realtime=True).step_s == 0.5
    assert transcript_config(engine.model_copy(update={"asr_step_s": 1.0}), False).step_s == 1.0
    with pytest.raises(ConfigError):
        load_config(CONFIG_DIR / "engine.yaml", ["engine.asr_step_s=0"])
    beam = load_config(CONFIG_DIR / "engine.yaml", ["engine.asr_beam_size=5"]).engine
    assert transcript_config(beam, realtime=True).beam_size == 5
    assert transcript_config(engine, realtime=True).beam_size == 1  # greedy by default
    with pytest.raises(ConfigError):
        load_config(CONFIG_DIR / "engine.yaml", ["engine.asr_beam_size=0"])
    with pytest.raises(ConfigError, match="late_hops"):  # late text lags at least one hop
        load_config(CONFIG_DIR / "engine.yaml", ["data.late_hops=0"])
