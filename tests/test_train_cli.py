"""train → checkpoint → eval through the command line, on a small MMSA-schema pickle."""

import json
from pathlib import Path

import pytest
from conftest import write_mmsa_pickle
from typer.testing import CliRunner

from stream_mmsa.cli import app
from stream_mmsa.model.prompts import N_PATTERNS
from stream_mmsa.model.sentiment import load_sentiment_model

runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("train")
    data = write_mmsa_pickle(tmp / "tiny.pkl", {"train": 48, "valid": 24, "test": 24})
    config = tmp / "tiny.yaml"
    config.write_text(
        f"name: tiny\ndata:\n  kind: mmsa_pickle\n  train_paths: [{data}]\n"
        "train:\n  epochs: 2\n  batch_size: 16\n"
    )
    ckpt = tmp / "tiny.pt"
    result = runner.invoke(app, ["train", "--config", str(config), "--out", str(ckpt)])
    assert result.exit_code == 0, result.output
    return data, ckpt


def test_checkpoint_carries_config_metrics_and_card(trained: tuple[Path, Path]) -> None:
    _, ckpt = trained
    model, extra = load_sentiment_model(ckpt)
    assert extra["config"]["name"] == "tiny"
    assert extra["label_scale"]["min"] == -3.0
    assert "MAE" in extra["valid_metrics"]
    assert "no test data was seen" in extra["model_card"]
    assert ckpt.with_suffix(".md").read_text() == extra["model_card"]
    assert model.fusion.config.input_dims == {"text": 768, "audio": 5, "vision": 20}
    assert model.fusion.tau.shape == (N_PATTERNS, 3)  # one gate threshold per pattern


def test_eval_writes_table_json_and_plot(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = trained
    out, plot = tmp_path / "rows.json", tmp_path / "plot.png"
    args = ["eval", "--checkpoint", str(ckpt), "--data", str(data), "--split", "test"]
    args += ["--missing", "all", "--imagine", "gate,never", "--json", str(out), "--plot", str(plot)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    settings = {r["setting"] for r in rows}
    assert {"complete", "missing_text", "element_0.5", "temporal_0.5"} <= settings
    assert {r["imagine"] for r in rows} == {"gate", "never"}
    assert "| missing_audio_vision | gate |" in result.output
    assert plot.stat().st_size > 10_000


def test_eval_errors_are_clear(trained: tuple[Path, Path]) -> None:
    data, ckpt = trained
    result = runner.invoke(
        app, ["eval", "--checkpoint", str(ckpt), "--data", str(data), "--split", "dev"]
    )
    assert result.exit_code == 2
    assert "dev" in result.output
    result = runner.invoke(app, ["eval", "--checkpoint", str(ckpt), "--data", "missing.csv"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(
        app, ["eval", "--checkpoint", str(ckpt), "--data", str(data), "--imagine", "maybe"]
    )
    assert result.exit_code == 2 and "--imagine" in result.output
