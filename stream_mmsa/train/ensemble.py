"""Seed ensembles: ship the text k-fold recipe, or assemble trained engine checkpoints.

Why: k-fold by video (kfold.py) measures the recipe on clips it never saw and found two
seeds' average better than one (README, `text-kfold`). Shipping that recipe unchanged
(every MOSI train+valid clip in training, each seed's epoch picked on MOSEI valid, the
seeds' scores averaged) makes those out-of-fold figures the estimate for the shipped
model. MOSI valid is training data then: a figure on it measures nothing.

    python -m stream_mmsa.train.ensemble --seeds 1111,1112 --set train.threads=1 \\
        --kfold-tag text-mosi-mosei+seed1112 --out stream_mmsa/checkpoints/text-mosi-mosei.pt

Spoken-engine models take ~20 min each and come from `stream-mmsa train` one seed at a
time, so their ensemble is assembled from the trained checkpoints (`--members`): the
same recipe, seeds differing, measured together on the windows each was selected on.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ..config import Config, load_config
from ..model.sentiment import SentimentModel, save_sentiment_model
from .datasets import make_loader
from .evaluate import predict
from .kfold import RecipeData, bootstrap_by_video, load_folds, pooled, recipe_data
from .metrics import mosi_metrics
from .run import LABEL_SCALE, OUTPUT_LINES, TEXT_LIMITS, build_model, figures, git_commit
from .trainer import TrainResult, fit


def train_members(
    config: Config, seeds: Sequence[int]
) -> tuple[SentimentModel, list[TrainResult], RecipeData]:
    """One model per seed on the whole recipe data; -> the ensemble, each fit, the data."""
    data = recipe_data(config)
    results = []
    for seed in seeds:
        member = config.model_copy(deep=True, update={"seed": seed})
        results.append(fit(member, data.train, data.select, build_model(member, data.dims, None)))
        print(f"seed {seed}: best epoch {results[-1].best_epoch}, {results[-1].seconds:.0f} s")
    first, *rest = [r.model.fusion for r in results]
    return SentimentModel(first, None, rest).eval(), results, data


def kfold_line(out: Path, tag: str, folds: int) -> str:
    """The recipe's pooled out-of-fold figures (saved by kfold.py), or where to make them."""
    command = f"python -m stream_mmsa.train.kfold --tag {tag}"
    try:
        results = load_folds(out, tag, folds)
    except (FileNotFoundError, ValueError):
        return f"  not saved on this machine: `{command}` measures it (README, `text-kfold`)."
    pred, label, videos = pooled(results)
    m = mosi_metrics(pred, label)
    ci = bootstrap_by_video(pred, label, videos)
    return (
        f"  `{command}`, {len(pred)} MOSI train+valid clips out of fold: Non0_acc_2 "
        f"{100 * m['Non0_acc_2']:.2f} [{100 * ci['Non0_acc_2'][0]:.1f}, "
        f"{100 * ci['Non0_acc_2'][1]:.1f}], MAE {m['MAE']:.3f} [{ci['MAE'][0]:.3f}, "
        f"{ci['MAE'][1]:.3f}] (95 % intervals over videos)."
    )


def card(
    config: Config,
    seeds: Sequence[int],
    results: Sequence[TrainResult],
    data: RecipeData,
    select: dict[str, float],
    estimate: str,
) -> str:
    minutes = sum(r.seconds for r in results) / 60
    epochs = ", ".join(str(r.best_epoch) for r in results)
    repeats = config.data.train_repeats or "none"
    lines = [
        f"# Model card: {config.name}",
        "",
        f"- A seed ensemble of {len(results)} models (seeds {', '.join(map(str, seeds))}; "
        "scores averaged), trained "
        f"{datetime.now(UTC):%Y-%m-%d} from commit {git_commit()} on {platform.machine()} "
        f"({'CUDA' if torch.cuda.is_available() else 'CPU'}), {minutes:.1f} min in all, "
        f"best epochs {epochs}.",
        f"- Data: the transcripts of MOSI train+valid and MOSEI train, "
        f"{len(data.train)} training samples per epoch (data.train_repeats {repeats}).",
        f"- Selection: each model's epoch on MOSEI valid ({len(data.select)} rows, "
        f"{config.train.select_metric}); no MOSI clip and no test data was used to select.",
        "- MOSEI valid, the ensemble (the selection set, so optimistic): " + figures(select),
        "- Estimate on MOSI clips never seen: k-fold by video of this same recipe:",
        estimate,
        "- MOSI valid is in the training data: figures on it are no measure of this model.",
        *OUTPUT_LINES,
        *TEXT_LIMITS,
        "- Modalities with training signal: text.",
    ]
    return "\n".join(lines) + "\n"


def assemble(paths: Sequence[Path], command: str) -> tuple[SentimentModel, dict]:
    """The spoken-engine checkpoints at `paths` as one ensemble (the first decides what to
    imagine), and its saved extra with a card written from the members' and new figures."""
    from .run import load_for_eval
    from .spoken import valid_split, window_and_utterance_metrics

    loaded = [load_for_eval(path) for path in paths]
    (first, extra, encoder), rest = loaded[0], loaded[1:]
    recipes = [{k: v for k, v in e["config"].items() if k != "seed"} for _, e, _ in loaded]
    if any(recipe != recipes[0] for recipe in recipes):
        raise ValueError("ensemble members must be trained alike (configs differ beyond the seed)")
    config = Config.model_validate(extra["config"])
    if config.data.kind != "spoken" or any(m.members or m.text_top for m, _, _ in loaded):
        raise ValueError(
            "--members assembles single spoken-engine checkpoints with no trained text layers"
        )
    model = SentimentModel(first.fusion, None, [m.fusion for m, _, _ in rest]).eval()
    dims = dict(first.fusion.config.input_dims)
    levels = window_and_utterance_metrics(model, valid_split(config, encoder, dims))
    seeds = [e["config"]["seed"] for _, e, _ in loaded]
    cards = [e["model_card"] for _, e, _ in loaded]
    text = assembled_card(config, seeds, paths, cards, levels, command)
    return model, {**extra, "seeds": seeds, "model_card": text}


def assembled_card(
    config: Config,
    seeds: Sequence[int],
    paths: Sequence[Path],
    cards: Sequence[str],
    levels: dict[str, dict[str, float]],
    command: str,
) -> str:
    """The first member's card with the ensemble's own figures in place of its one model's."""
    own = ("# ", "- Trained", "- Validation")

    def trained(card: str) -> str:
        return next(x for x in card.splitlines() if x.startswith("- Trained"))[2:]

    lines = [
        f"# Model card: {config.name}",
        "",
        f"- A seed ensemble of {len(cards)} models trained alike (seeds "
        f"{', '.join(map(str, seeds))}): scores averaged; the first model's evaluator decides "
        "what a window imagines and the others follow. Assembled "
        f"{datetime.now(UTC):%Y-%m-%d} from commit {git_commit()} by `{command}`.",
        "- Members:",
        *(f"  - {p.name}: {trained(card)}" for p, card in zip(paths, cards, strict=True)),
        *(
            f"- Validation per {level} ({v['count']:.0f}, spoken MOSI valid, the ensemble; each "
            "member's epoch was selected on these windows): " + figures(v)
            for level, v in levels.items()
        ),
        *(x for x in cards[0].splitlines()[1:] if x and not x.startswith(own)),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/text.yaml"))
    parser.add_argument("--seeds", default="1111,1112", help="comma-separated training seeds")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="config overrides"
    )
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint to write")
    parser.add_argument(
        "--members", type=Path, nargs="+", help="assemble these trained engine checkpoints"
    )
    parser.add_argument("--kfold-out", type=Path, default=Path("runs/kfold"))
    parser.add_argument("--kfold-tag", help="the k-fold runs of this recipe, e.g. a+b")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.members:
        members = " ".join(p.as_posix() for p in args.members)
        command = f"python -m stream_mmsa.train.ensemble --members {members} --out {args.out}"
        model, extra = assemble(args.members, command)
        save_sentiment_model(args.out, model, extra)
        args.out.with_suffix(".md").write_text(extra["model_card"])
        print(extra["model_card"])
        return
    config = load_config(args.config, args.set)
    torch.set_num_threads(config.train.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    model, results, data = train_members(config, seeds)
    pred, label = predict(model, make_loader(data.select, 256))
    select = mosi_metrics(np.asarray(pred), np.asarray(label))
    tag = args.kfold_tag or "+".join(str(s) for s in seeds)
    text = card(config, seeds, results, data, select, kfold_line(args.kfold_out, tag, args.folds))
    extra = {
        "config": config.model_dump(mode="json"),
        "seeds": seeds,
        "label_scale": LABEL_SCALE,
        "valid_metrics": select,
        "model_card": text,
    }
    save_sentiment_model(args.out, model, extra)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
