"""The train and eval commands: config → data → fit → checkpoint with its model card."""

from __future__ import annotations

import math
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ..config import REPO_ROOT, Config, TextConfig, load_config
from ..model.fusion import FusionModel
from ..model.sentiment import SentimentModel, load_sentiment_model, save_sentiment_model
from ..model.types import MODALITIES
from .evaluate import EvalRow, evaluate, format_table
from .loading import datasets_from_config, is_pickle, load_split, make_text_encoder
from .protocols import ModalityPattern, protocol_settings
from .trainer import TrainResult, fit

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "text-mosi-mosei.pt"
SPOKEN_LIMITS = [
    "- What each branch learnt from:",
    "  - text: MOSI/MOSEI transcripts spoken by espeak-ng (a voice drawn per utterance: en-us",
    "    variant, rate, pitch, level, room noise, sox reverb for half) and recognised by the",
    "    engine's streaming ASR (Whisper tiny.en) inside a real Session; every 4 s window",
    "    carries the words recognised in it, errors and cut-off sentences included, labelled",
    "    with its utterance's label.",
    "  - audio: the same spoken audio through the AcousticExtractor. NO REAL SENTIMENT SIGNAL:",
    "    voices are drawn from the utterance id, never the label, so prosody never follows",
    "    the label; the model can only learn speech timing/presence, not how a person sounds.",
    "  - vision: NO REAL SENTIMENT SIGNAL. There is no labelled face video here: each window",
    "    got the FaceExtractor output of a random window of the bundled sample's face",
    "    (scikit-image astronaut), unrelated to the label, so all the model can learn is",
    "    that vision says nothing about sentiment. The face counts when serving, outside",
    "    this checkpoint: a pretrained expert, the FER2013 expression classifier (fer",
    "    25.10.3's mini-Xception, features/expression.py), moves the score by a stated rule",
    "    (model/face_prior.py; its slope from TFN's published vision-only MOSI figures).",
]
"""The card's limits for data.kind=spoken: what each branch could and could not learn."""
SPOKEN_SCOPE = [
    "- English only; MOSI/MOSEI are YouTube monologues (opinion videos), so conversational,",
    "  sarcastic or non-English speech is out of distribution.",
    "- Licence: CMU-MOSI and CMU-MOSEI carry research-use terms; so does this model.",
]
"""The spoken card's closing lines: where the model applies and on what terms."""
OUTPUT_LINES = [
    "- Output: score on the CMU-MOSI scale (-3 … 3), confidence, per-modality weights,",
    "  evaluator decisions for missing modalities.",
]
TEXT_LIMITS = [
    "- Limits: trained on transcripts only. Its audio and vision branches never saw",
    "  real signal: they are untrained, so the evaluator's gate for them is closed",
    "  (τ = +inf): it never imagines them and the score comes from the text alone.",
    "  English only; MOSI/MOSEI are YouTube monologues (opinion videos), so",
    "  conversational, sarcastic or non-English speech is out of distribution.",
    "- Licence: CMU-MOSI and CMU-MOSEI carry research-use terms; so does this model.",
]
"""The card's limits for data.kind=label_csv (transcripts only)."""
LABEL_SCALE = {"min": -3.0, "max": 3.0, "name": "CMU-MOSI sentiment"}


def build_model(config: Config, dims: dict[str, int], text_top: torch.nn.Module | None):
    """The fusion model sized to the data's dims, under the config's seed."""
    torch.manual_seed(config.seed)
    config.model = config.model.model_copy(update={"input_dims": dims})
    return SentimentModel(FusionModel(config.model), text_top)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def figures(m: dict[str, float]) -> str:
    return ", ".join(
        f"{k} {100 * m[k]:.2f}" if "acc" in k or "F1" in k else f"{k} {m[k]:.3f}"
        for k in ("Non0_acc_2", "Non0_F1_score", "Has0_acc_2", "Mult_acc_7", "MAE", "Corr")
        if k in m
    )


def gate_lines(tau: torch.Tensor) -> list[str]:
    """What the evaluator does with each missing modality, per pattern of those present:
    the card must say whether a branch with no real signal is ever relied on."""
    lines = ["- Evaluator gate (τ per pattern, calibrated on the validation windows):"]
    for j, modality in enumerate(MODALITIES):
        rules = []
        for pattern in range(1, 1 << len(MODALITIES)):  # bit k: MODALITIES[k] present
            if pattern >> j & 1:
                continue
            present = "+".join(m for k, m in enumerate(MODALITIES) if pattern >> k & 1)
            t = float(tau[pattern, j])
            rule = "never" if t == math.inf else "always" if t == -math.inf else f"gain > {t:.2f}"
            rules.append(f"{present} {rule}")
        lines.append(f"  {modality} missing, imagined when: " + "; ".join(rules) + ".")
    return lines


def model_card(
    config: Config,
    result: TrainResult,
    n_train: int,
    n_valid: int,
    data: str,
    levels: dict[str, dict[str, float]] | None = None,
) -> str:
    """A short markdown card: what trained it, how it was selected, what it cannot know.

    levels: validation figures per window and per utterance (spoken data).
    """
    m = result.valid_metrics
    present = [k for k in ("text", "audio", "vision") if k in data]
    if config.data.kind == "spoken":  # audio and vision are fed, but carry no label signal
        present = ["text"]
    lines = [
        f"# Model card: {config.name}",
        "",
        f"- Trained {datetime.now(UTC):%Y-%m-%d} from commit {git_commit()} on "
        f"{platform.machine()} ({'CUDA' if torch.cuda.is_available() else 'CPU'}), "
        f"seed {config.seed}, {result.seconds / 60:.1f} min, best epoch {result.best_epoch}.",
        f"- Data: {data}. {n_train} training samples per epoch (with data.train_repeats "
        f"{config.data.train_repeats or 'none'}) and {n_valid} validation samples.",
        "- Selection: early stopping on the validation split only; no test data was seen.",
        f"- Validation ({config.train.select_metric} selected): " + figures(m),
        *OUTPUT_LINES,
    ]
    if config.data.kind == "synthetic":
        lines.append(
            "- Limits: trained on the synthetic mechanism benchmark. It is NOT a sentiment "
            "model and must never be used as one."
        )
    elif config.data.kind == "label_csv":
        lines += TEXT_LIMITS
    elif config.data.kind == "spoken":
        for level, v in (levels or {}).items():
            lines.append(
                f"- Validation per {level} ({v['count']:.0f}, spoken MOSI valid): " + figures(v)
            )
        repeats = config.data.text_repeats or [1] * len(config.data.text_paths)
        gold = ", ".join(
            f"{p.parent.name} train" + (f" ×{n}" if n > 1 else "")
            for p, n in zip(config.data.text_paths, repeats, strict=True)
        )
        hop = config.engine.window.hop
        lines += [
            *SPOKEN_LIMITS[:6],
            f"    Gold (human) transcripts as text-only samples: {gold or 'none'}.",
            *SPOKEN_LIMITS[6:],
            "- Windows were cut with the watermark clock (as `run --fast`), so the recogniser was",
            f"  never behind; instead {config.data.late_text:.0%} of training windows "
            "(data.late_text) carry the text",
            f"  of a window {hop:g}-{config.data.late_hops * hop:g} s earlier "
            "(data.late_hops), and random modality drops (train.drop_rate) remove it.",
            *SPOKEN_SCOPE,
            *gate_lines(result.model.fusion.tau),
        ]
    if present:
        lines.append(f"- Modalities with training signal: {', '.join(present)}.")
    return "\n".join(lines) + "\n"


def train_from_config(
    config_path: Path, overrides: list[str], out: Path | None, console: Console
) -> Path:
    config = load_config(config_path, overrides)
    torch.set_num_threads(config.train.threads)
    train, valid, encoder = datasets_from_config(config)
    text_top = encoder.top if encoder and config.text.trainable_top_layers else None
    model = build_model(config, train.dims, text_top)
    console.print(
        f"[bold]{config.name}[/]: {len(train)} train / {len(valid)} valid samples "
        f"({train.name} / {valid.name}), "
        f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters"
    )

    def report(row: dict[str, float]) -> None:
        console.print(
            f"epoch {int(row['epoch']):3d}  loss {row['train_total']:.3f}  "
            f"valid MAE {row['MAE']:.3f}  Non0_acc_2 {100 * row['Non0_acc_2']:.2f}  "
            f"Corr {row['Corr']:.3f}  (selection MAE {row['select_MAE']:.3f})"
        )

    result = fit(config, train, valid, model, on_epoch=report)
    kinds = sorted({m for s in train.samples[:200] for m in s.features})
    data_desc = f"{train.name} (modalities: {', '.join(kinds)})"
    levels = None
    if config.data.kind == "spoken":
        from .spoken import window_and_utterance_metrics

        levels = window_and_utterance_metrics(result.model, valid)
    card = model_card(config, result, len(train), len(valid), data_desc, levels)
    out = out or Path("runs") / f"{config.name}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "label_scale": LABEL_SCALE,
        "valid_metrics": result.valid_metrics,
        "history": result.history,
        "model_card": card,
    }
    save_sentiment_model(out, result.model, extra)
    out.with_suffix(".md").write_text(card)
    return out


def load_for_eval(checkpoint: Path | None, device: str | torch.device = "cpu"):
    """Model, its saved extra, and the text encoder its text layers need (if any), on `device`."""
    path = checkpoint or DEFAULT_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    probe = torch.load(path, map_location="cpu", weights_only=False)
    saved = probe.get("extra", probe).get("config", {})
    encoder = None
    if saved.get("data", {}).get("kind") in ("label_csv", "spoken"):
        encoder = make_text_encoder(TextConfig.model_validate(saved.get("text", {}))).to(device)
    model, extra = load_sentiment_model(path, map_location=device, text_encoder=encoder)
    return model, extra, encoder


def evaluate_checkpoint(
    checkpoint: Path | None,
    data: Path,
    split: str,
    missing: str,
    imagine_modes: list[str],
    seed: int,
) -> tuple[list[EvalRow], str]:
    if not data.exists():
        raise FileNotFoundError(f"data file {data} does not exist")
    bad = set(imagine_modes) - {"gate", "always", "never"}
    if bad or not imagine_modes:
        raise ValueError(f"--imagine takes gate, always and/or never, got {sorted(bad)}")
    model, _, encoder = load_for_eval(checkpoint)
    if encoder is None and not is_pickle(data):
        raise ValueError(f"this checkpoint takes feature pickles, not transcripts ({data})")
    dims = dict(model.fusion.config.input_dims)
    dataset = load_split(data, split, encoder, dims)
    protocols = (
        [ModalityPattern("complete")] if missing == "complete" else protocol_settings(missing)
    )
    rows = evaluate(model, dataset, protocols, imagine_modes, seed=seed)
    title = (
        f"{dataset.name} ({len(dataset)} samples) · checkpoint {checkpoint or DEFAULT_CHECKPOINT}"
    )
    return rows, format_table(rows, title)
