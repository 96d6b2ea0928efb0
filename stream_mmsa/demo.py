"""`stream-mmsa demo`: the default checkpoint on bundled utterances, and the mechanism table."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from .events import sentiment_label
from .model.types import MODALITIES, MultimodalBatch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "utterances.txt"


def _text_batch(states: torch.Tensor, mask: torch.Tensor, dims: dict[str, int]) -> MultimodalBatch:
    """Text-only batch: audio and vision absent (present False, one zero placeholder step)."""
    n = states.shape[0]
    features = {"text": states}
    masks = {"text": mask}
    for m in MODALITIES[1:]:
        features[m] = torch.zeros(n, 1, dims[m])
        masks[m] = torch.zeros(n, 1, dtype=torch.bool)
    present = torch.tensor([[True, False, False]]).repeat(n, 1)
    return MultimodalBatch(features, masks, present)


def score_texts(texts: list[str]) -> list[tuple[str, float, float]]:
    """(text, score, confidence) from the default checkpoint."""
    from .train.run import load_for_eval

    model, _, encoder = load_for_eval(None)
    states, mask = encoder.encode_bottom(texts)
    dims = dict(model.fusion.config.input_dims)
    with torch.inference_mode():
        out = model(_text_batch(states, mask, dims))
    return [
        (t, float(s), float(c)) for t, s, c in zip(texts, out.score, out.confidence, strict=True)
    ]


def run_demo(console: Console) -> None:
    torch.set_num_threads(2)
    texts = [line.strip() for line in EXAMPLES.read_text().splitlines() if line.strip()]
    table = Table(title="Default text checkpoint on examples/utterances.txt")
    for column in ("utterance", "score", "label", "confidence"):
        table.add_column(column)
    for text, score, confidence in score_texts(texts):
        table.add_row(text, f"{score:+.2f}", sentiment_label(score), f"{confidence:.2f}")
    console.print(table)

    from .train.ablation import MECHANISM_CHECKPOINT, mechanism_table

    if MECHANISM_CHECKPOINT.exists():
        console.print(mechanism_table())
