"""Evaluation under missing-modality protocols: MMSA-style tables and a robustness plot."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.sentiment import SentimentModel
from ..model.types import MultimodalBatch
from .datasets import MultimodalDataset, make_loader
from .metrics import mosi_metrics
from .protocols import MissingProtocol

TABLE_METRICS = (
    "Has0_acc_2",
    "Has0_F1_score",
    "Non0_acc_2",
    "Non0_F1_score",
    "Mult_acc_5",
    "Mult_acc_7",
    "MAE",
    "Corr",
)


@torch.inference_mode()
def predict(
    model: SentimentModel,
    batches: Iterable[MultimodalBatch],
    device: torch.device | str = "cpu",
    imagine: str = "gate",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and labels over batches, on CPU."""
    model.eval()
    preds, labels = [], []
    for batch in batches:
        out = model(batch.to(device), imagine=imagine)
        preds.append(out.score.float().cpu())
        labels.append(batch.labels.float().cpu())
    return torch.cat(preds), torch.cat(labels)


@dataclass
class EvalRow:
    setting: str
    imagine: str
    metrics: dict[str, float]
    imagined_rate: float

    def as_dict(self) -> dict[str, object]:
        return {
            "setting": self.setting,
            "imagine": self.imagine,
            "imagined_rate": self.imagined_rate,
            **self.metrics,
        }


@torch.inference_mode()
def evaluate(
    model: SentimentModel,
    dataset: MultimodalDataset,
    protocols: Sequence[MissingProtocol],
    imagine_modes: Sequence[str] = ("gate",),
    seed: int = 1111,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> list[EvalRow]:
    """One row per (protocol, imagine mode); masks are drawn with a fixed seed per protocol."""
    model.eval()
    clean = list(make_loader(dataset, batch_size, shuffle=False, seed=seed))
    rows = []
    for protocol in protocols:
        gen = torch.Generator().manual_seed(seed)
        batches = [protocol.apply(b, gen) for b in clean]
        for mode in imagine_modes:
            preds, labels, imagined, missing = [], [], 0, 0
            for batch in batches:
                out = model(batch.to(device), imagine=mode)
                preds.append(out.score.float().cpu())
                labels.append(batch.labels.float().cpu())
                imagined += int(out.imagined.sum())
                missing += int((~batch.present).sum())
            metrics = mosi_metrics(torch.cat(preds), torch.cat(labels))
            rate = imagined / missing if missing else 0.0
            rows.append(EvalRow(protocol.name, mode, metrics, rate))
    return rows


def format_table(rows: Sequence[EvalRow], title: str | None = None) -> str:
    """A markdown table with MMSA's column names; accuracies and F1 in percent like MMSA."""
    head = ["setting", "imagine", *TABLE_METRICS, "imagined"]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.setting, row.imagine]
        for key in TABLE_METRICS:
            value = row.metrics[key]
            cells.append(f"{value:.3f}" if key in ("MAE", "Corr") else f"{100 * value:.2f}")
        cells.append(f"{100 * row.imagined_rate:.0f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_RATE = re.compile(r"^(element|temporal)_(\d+(?:\.\d+)?)$")


def plot_robustness(rows: Sequence[EvalRow], path: Path, metric: str = "Non0_acc_2") -> Path:
    """Metric vs missing rate per imagine mode (rate protocols), bars for modality patterns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    patterns: dict[str, list[tuple[str, float]]] = {}
    for row in rows:
        value = row.metrics[metric]
        match = _RATE.match(row.setting)
        if match:
            curves.setdefault((match[1], row.imagine), []).append((float(match[2]), value))
        else:
            patterns.setdefault(row.imagine, []).append((row.setting, value))
    panels = int(bool(curves)) + int(bool(patterns))
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(6.5 * max(panels, 1), 4.2), squeeze=False)
    ax_iter = iter(axes[0])
    if curves:
        ax = next(ax_iter)
        for (kind, mode), points in sorted(curves.items()):
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=f"{kind} · {mode}")
        ax.set_xlabel("missing rate")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs missing rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if patterns:
        ax = next(ax_iter)
        modes = sorted(patterns)
        names = [name for name, _ in patterns[modes[0]]]
        width = 0.8 / len(modes)
        for i, mode in enumerate(modes):
            values = dict(patterns[mode])
            ax.bar(
                [j + i * width for j in range(len(names))],
                [values.get(n, float("nan")) for n in names],
                width,
                label=mode,
            )
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
        ax.set_xticklabels([n.replace("missing_", "−") for n in names], rotation=30, ha="right")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per availability pattern")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
