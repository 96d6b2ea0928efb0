"""The missing-modality ablation on the synthetic benchmark, made by one command.

Per seed: a backbone is trained (and one without prompts); the evaluator and its τ are
fitted on the benchmark's valid split under every setting; everything is reported on
the test split: gate, always, never, the oracle gate (the ceiling), "plain" (the quality
signals as inputs with no gate, gate_study.py) and the no-prompt model's gate. Settings:
the six missing patterns and late text with a camera/microphone stretch dropped. The
recalled text of the benchmark is faithful with an observable probability
(synthetic.py), so a gate that reads it has a known margin to win.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from ..config import Config, load_config
from ..model.evaluator import fit_evaluator, score_decisions
from .datasets import MultimodalDataset, make_loader
from .gate_study import METHODS, Judged, auroc, bootstrap, fit_plain, judge, spearman
from .protocols import Both, MissingProtocol, ModalityPattern, TemporalMissing
from .readme import write_block
from .run import build_model
from .synthetic import make_synthetic
from .trainer import fit

SETTINGS: tuple[MissingProtocol, ...] = (
    *(ModalityPattern(p) for p in ("missing_text", "missing_audio", "missing_vision")),
    *(ModalityPattern(p) for p in ("missing_text_audio", "missing_text_vision")),
    ModalityPattern("missing_audio_vision"),
    Both(ModalityPattern("missing_text"), TemporalMissing(0.5)),
)
COLUMNS = (*METHODS, "no prompts")


def _pairs(dataset: MultimodalDataset, protocol: MissingProtocol, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return [(b, protocol.apply(b, gen)) for b in make_loader(dataset, 256, seed=seed)]


def _study_seed(
    config: Config, splits, console: Console
) -> tuple[dict[str, Judged], dict[str, float]]:
    """One seed: both backbones trained, evaluators fitted on valid, judged on test;
    -> the judged settings and the trained model's private-prompt cosines."""
    out: dict[str, Judged] = {}
    cosines: dict[str, float] = {}
    extra: dict[str, dict[str, np.ndarray]] = {}
    for prompts in (True, False):
        cfg = config if prompts else config.model_copy(deep=True)
        if not prompts:
            cfg.model.use_prompts = False
        model = build_model(cfg, splits["train"].dims, None)
        result = fit(cfg, splits["train"], splits["valid"], model)
        fusion = result.model.fusion
        fit_pairs = [p for s in SETTINGS for p in _pairs(splits["valid"], s, config.seed)]
        fitted = score_decisions(fusion, fit_pairs)
        evaluator = fit_evaluator(fusion, fitted, seed=config.seed)
        plain = fit_plain(fitted, config.seed)
        console.print(
            f"  seed {config.seed} prompts={prompts}: best epoch {result.best_epoch}, "
            f"evaluator expected error {evaluator.expected_error_start:.3f} → "
            f"{evaluator.expected_error_end:.3f} in {result.seconds:.0f} s"
        )
        for setting in SETTINGS:
            test = score_decisions(fusion, _pairs(splits["test"], setting, config.seed + 1))
            groups = np.arange(len(test.label))
            judged = judge(fusion, test, plain, groups)
            if prompts:
                out[setting.name] = judged
                cosines = fusion.prompts.private_cosines()
            else:
                extra[setting.name] = {"no prompts": judged.errors["gate"]}
    for name, judged in out.items():
        judged.errors.update(extra[name])
    return out, cosines


def run_ablation(config_path: Path, seeds: list[int], out: Path, console: Console) -> str:
    """Every seed's study, a markdown report with intervals, a plot and a JSON of figures."""
    study, cosines = [], []
    for seed in seeds:
        config = load_config(config_path, [f"seed={seed}"])
        torch.set_num_threads(config.train.threads)
        splits = make_synthetic(*config.data.synthetic_sizes, seed=config.seed)
        judged, cos = _study_seed(config, splits, console)
        study.append(judged)
        cosines.append(cos)
    intervals = bootstrap(study, also={"gate - no prompts": ("gate", "no prompts")})
    ranking = _ranking(study)
    cosine = {m: statistics.fmean(c[m] for c in cosines) for m in cosines[0]}
    report = _report(study, intervals, ranking, cosine, seeds, config_path, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    figures = {"intervals": intervals, "ranking": ranking, "private_prompt_cosine": cosine}
    out.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")
    command = f"stream-mmsa ablation --config {Path(config_path).as_posix()}"
    write_block(Path("README.md"), "ablation-synthetic", summary(figures, command, out))
    plot_study(study, out.with_suffix(".png"), "synthetic benchmark, test split")
    return report


def summary(figures: dict, command: str, out: Path) -> str:
    """The README's lines for one study, from its figures file."""
    mean, gate = figures["intervals"]["mean"], figures["intervals"]["gate - fixed"]
    plain = figures["intervals"]["gate - plain"]
    ranking = figures["ranking"]
    rank = ranking.get("spearman_mean", ranking.get("spearman"))
    methods = " · ".join(f"{k} {v:.3f}" for k, v in mean.items() if k != "fixed")
    return (
        f"`{command}` → [{out.as_posix()}]({out.as_posix()}): mean |error| {methods}. "
        f"Gate − better fixed policy {gate['difference']:+.3f} (95 % CI "
        f"[{gate['ci95_low']:+.3f}, {gate['ci95_high']:+.3f}]); gate − plain "
        f"{plain['difference']:+.3f} [{plain['ci95_low']:+.3f}, {plain['ci95_high']:+.3f}]; "
        f"{_prompts_line(figures['intervals'])}"
        f"Spearman of the evaluator's score with the realised gain {rank:.2f}."
        f"{_videos_line(figures.get('intervals_by_video'))}"
    )


def _videos_line(intervals: dict | None) -> str:
    """Gate − better fixed policy drawn over whole videos, when the study has it."""
    if intervals is None:
        return ""
    row = intervals["gate - fixed"]
    return (
        f" Drawing whole videos ({intervals['videos']['count']:.0f}) instead of utterances: "
        f"gate − better fixed {row['difference']:+.3f} [{row['ci95_low']:+.3f}, "
        f"{row['ci95_high']:+.3f}]."
    )


def _prompts_line(intervals: dict) -> str:
    """The full model against the one trained without prompts, when the study has it."""
    row = intervals.get("gate - no prompts")
    if row is None:
        return ""
    return (
        f"gate − no prompts {row['difference']:+.3f} "
        f"[{row['ci95_low']:+.3f}, {row['ci95_high']:+.3f}]; "
    )


def _ranking(study) -> dict[str, float]:
    """AUROC and Spearman of the evaluator's score against the realised gain, per seed."""
    aurocs, rhos = [], []
    for seed in study:
        predicted = np.concatenate([j.predicted for j in seed.values()])
        realised = np.concatenate([j.realised for j in seed.values()])
        aurocs.append(auroc(predicted, realised > 0))
        rhos.append(spearman(predicted, realised))
    return {
        "auroc_mean": statistics.fmean(aurocs),
        "auroc_min": min(aurocs),
        "spearman_mean": statistics.fmean(rhos),
        "spearman_min": min(rhos),
    }


def table(study, columns=COLUMNS) -> list[str]:
    """Markdown rows: mean |error| per setting and method (seeds averaged), and the average."""
    settings = list(study[0])
    lines = [
        "| setting | " + " | ".join(columns) + " | imagine rate |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    averages = dict.fromkeys(columns, 0.0)
    for name in settings:
        means = {
            c: statistics.fmean(float(s[name].errors[c].mean()) for s in study) for c in columns
        }
        rate = statistics.fmean(s[name].imagine_rate for s in study)
        for c in columns:
            averages[c] += means[c] / len(settings)
        cells = " | ".join(f"{means[c]:.3f}" for c in columns)
        lines.append(f"| {name} | {cells} | {rate:.2f} |")
    lines.append(
        "| **average** | " + " | ".join(f"**{averages[c]:.3f}**" for c in columns) + " | |"
    )
    return lines


def interval_lines(intervals: dict) -> list[str]:
    lines = [
        "| difference (MAE, lower is better for the gate) | point | 95 % CI |",
        "|---|---|---|",
    ]
    for name, row in intervals.items():
        if name != "mean":
            lines.append(
                f"| {name} | {row['difference']:+.4f} | "
                f"[{row['ci95_low']:+.4f}, {row['ci95_high']:+.4f}] |"
            )
    return lines


def verdict(intervals: dict) -> str:
    row = intervals["gate - fixed"]
    if row["ci95_high"] < 0:
        return (
            f"The gate beats the better fixed policy by {-row['difference']:.3f} MAE; "
            "the 95 % interval excludes 0."
        )
    interval = f"[{row['ci95_low']:+.3f}, {row['ci95_high']:+.3f}]"
    if row["ci95_low"] > 0:
        return (
            f"The gate is worse than the better fixed policy by {row['difference']:.3f} MAE "
            f"(interval {interval} excludes 0)."
        )
    return (
        f"The gate does not beat the better fixed policy (difference {row['difference']:+.3f}, "
        f"interval {interval} includes 0)."
    )


def _report(study, intervals, ranking, cosine, seeds, config_path: Path, out: Path) -> str:
    cosines = ", ".join(f"{m} {v:.2f}" for m, v in cosine.items())
    lines = [
        "# Missing-modality ablation (synthetic mechanism benchmark)",
        "",
        f"Made by `stream-mmsa ablation --config {Path(config_path).as_posix()} "
        f"--seeds {','.join(map(str, seeds))}`. Per seed: the backbone is trained on the "
        "benchmark's train split, the evaluator and τ are fitted on its valid split, and "
        "every figure is on its test split (mean |error|, lower is better; seeds averaged). "
        "The benchmark is synthetic (stream_mmsa/train/synthetic.py): it checks the "
        "mechanisms and says nothing about sentiment. Its recalled text is faithful with a "
        "probability the evaluator can read, so an oracle has a known margin.",
        "",
        "Columns: `gate` the evaluator decides; `always`/`never` imagine; `oracle` the best "
        "decision per sample (the ceiling); `plain` always imagine plus a correction from the "
        "same inputs and quality signals the evaluator reads, with no gate; `no prompts` the "
        "gate of a model trained without prompts. `fixed` below is, per setting, the better "
        "of always and never on the test samples themselves (the strongest fixed policy).",
        "",
        *table(study),
        "",
        "Paired bootstrap over test samples (2000 draws, every seed resampled in each draw):",
        "",
        *interval_lines(intervals),
        "",
        verdict(intervals),
        "",
        "The evaluator's score against the realised gain (|ŷ_skip − y| − |ŷ_imagine − y|, one "
        f"missing modality): AUROC {ranking['auroc_mean']:.3f} (lowest seed "
        f"{ranking['auroc_min']:.3f}), Spearman {ranking['spearman_mean']:.3f} (lowest "
        f"{ranking['spearman_min']:.3f}).",
        "",
        f"Private prompts against the shared one (cosine, seeds averaged): {cosines}.",
        "",
        f"Figures: `{out.with_suffix('.json').name}`.",
        "",
        f"![mean |error| per setting]({out.with_suffix('.png').name})",
    ]
    return "\n".join(lines) + "\n"


def plot_study(study, path: Path, title: str, columns=COLUMNS) -> Path:
    """Grouped bars: mean |error| per setting and method, with the seeds' spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(study[0])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(settings) + 2), 4.2))
    width = 0.8 / len(columns)
    for k, c in enumerate(columns):
        values = np.array([[float(s[n].errors[c].mean()) for n in settings] for s in study])
        x = np.arange(len(settings)) + (k - (len(columns) - 1) / 2) * width
        ax.bar(x, values.mean(0), width, yerr=values.std(0) if len(study) > 1 else None, label=c)
    ax.set_xticks(np.arange(len(settings)), [n.replace("missing_", "−") for n in settings])
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.set_ylabel("mean |error| (lower is better)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
