"""Assembling engine checkpoints into a seed ensemble, and the cards that describe them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from stream_mmsa.config import load_config
from stream_mmsa.model.config import ModelConfig
from stream_mmsa.model.fusion import FusionModel
from stream_mmsa.model.sentiment import SentimentModel, save_sentiment_model
from stream_mmsa.train.ensemble import assemble, assembled_card
from stream_mmsa.train.run import model_card

FIGURES = {"Non0_acc_2": 0.7, "MAE": 1.1, "count": 229}


def _card(seed: int) -> str:
    return "\n".join(
        [
            "# Model card: engine-mosi-mosei",
            "",
            f"- Trained 2026-12-03 from commit abc on x86_64 (CPU), seed {seed}, 19 min.",
            "- Data: spoken MOSI train.",
            "- Validation per window (2034, spoken MOSI valid): Non0_acc_2 66.00",
            "- What each branch learnt from:",
            "  - text: recognised speech.",
        ]
    )


def test_the_ensemble_card_replaces_the_members_figures_with_its_own() -> None:
    config = load_config(Path("configs/engine.yaml"))
    card = assembled_card(
        config,
        [1111, 1112],
        [Path("runs/a.pt"), Path("runs/b.pt")],
        [_card(1111), _card(1112)],
        {"window": FIGURES, "utterance": FIGURES},
        "python -m stream_mmsa.train.ensemble --members runs/a.pt runs/b.pt --out x.pt",
    )
    lines = card.splitlines()
    assert lines[0] == "# Model card: engine-mosi-mosei"
    assert "seed ensemble of 2 models trained alike (seeds 1111, 1112)" in card
    assert (
        "  - b.pt: Trained 2026-12-03 from commit abc on x86_64 (CPU), seed 1112, 19 min." in lines
    )
    assert "Non0_acc_2 66.00" not in card  # one member's figure is not the ensemble's
    assert sum(line.startswith("- Validation per") for line in lines) == 2
    assert lines[-2:] == ["- What each branch learnt from:", "  - text: recognised speech."]


def _member(path: Path, seed: int, **train: object) -> Path:
    config = load_config(
        Path("configs/synthetic.yaml"), [f"train.{k}={v}" for k, v in train.items()]
    )
    config = config.model_copy(update={"seed": seed})
    fusion = FusionModel(ModelConfig(input_dims={"text": 8, "audio": 4, "vision": 4}))
    extra = {"config": config.model_dump(mode="json"), "model_card": _card(seed)}
    save_sentiment_model(path, SentimentModel(fusion.eval()), extra)
    return path


def test_assembling_refuses_members_of_different_recipes_and_non_engine_models(
    tmp_path: Path,
) -> None:
    a = _member(tmp_path / "a.pt", 1)
    with pytest.raises(ValueError, match="trained alike"):
        assemble([a, _member(tmp_path / "b.pt", 2, lr=0.01)], "cmd")
    with pytest.raises(ValueError, match="spoken-engine checkpoints"):
        assemble([a, _member(tmp_path / "c.pt", 2)], "cmd")


def test_a_spoken_card_lists_gold_transcripts_after_the_text_branch_with_their_repeats() -> None:
    config = load_config(Path("configs/engine.yaml"))
    fusion = FusionModel(ModelConfig(input_dims=dict(config.model.input_dims)))
    result = SimpleNamespace(
        valid_metrics=FIGURES, seconds=60.0, best_epoch=1, model=SimpleNamespace(fusion=fusion)
    )
    lines = model_card(config, result, 10, 5, "spoken").splitlines()
    gold = lines.index(
        "    Gold (human) transcripts as text-only samples: mosi train ×4, mosei train."
    )
    assert lines[gold - 1].endswith("with its utterance's label.")
    assert lines[gold + 1].startswith("  - audio:")
    late = next(i for i, x in enumerate(lines) if x.startswith("- Windows were cut"))
    assert "25% of training windows" in lines[late + 1]  # the config's lag, not a fixed text
    assert lines[late + 2].startswith("  of a window 0.5-1.5 s earlier (data.late_hops)")
    assert lines[late + 3].startswith("- English only")
