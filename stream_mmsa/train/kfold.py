"""K-fold by video over MOSI train+valid: how well a text recipe does on clips it never saw.

Why: the text model is selected on MOSI valid's 229 clips, so its valid figure (84.3
Non0_acc_2) is optimistic: on the withheld test split it scored 81.6. Folds hold out whole
videos (one speaker's clips are alike, so splitting clips would leak). Each fold trains the
config's recipe on the other folds' MOSI clips (repeated as `data.train_repeats` says) plus
the other train paths' train rows (MOSEI), picks its epoch on those paths' *valid* rows
(never on the held-out fold), and scores the held-out fold. The out-of-fold predictions
cover every clip once: pooled figures get a bootstrap interval over videos, and the fold
figures give the spread.

Folds are independent processes (`--fold i`, one core each), saved as JSON, so they run
side by side and resume; without `--fold` the saved folds are reported (`--readme` writes
README's `text-kfold` block). Recipes compare on the same folds: `--set` changes the config,
`--tag` names the run, `--against` gives the paired difference, and a tag "a+b+c" averages
runs a, b and c (a seed ensemble).

    python -m stream_mmsa.train.kfold --fold 0 --set train.threads=1      # one of 5
    python -m stream_mmsa.train.kfold --readme
    python -m stream_mmsa.train.kfold --fold 0 --set seed=2 --tag seed2   # another seed
    python -m stream_mmsa.train.kfold --tag text-mosi-mosei+seed2 --against text-mosi-mosei
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Config, load_config
from ..features.text import encode_records
from .datasets import MultimodalDataset, Sample, TextRecord, load_label_csv, make_loader
from .evaluate import predict
from .loading import make_text_encoder
from .metrics import mosi_metrics
from .readme import publish
from .run import build_model
from .trainer import fit

FOLD_SEED = 1111
"""Folds do not follow the training seed, so recipes and seeds compare on the same clips."""


def video_of(record: TextRecord) -> str:
    """The label.csv's video_id (MOSEI's ids hold underscores: parsing them splits videos),
    else the one in a MOSI-style id."""
    return record.video or _video(record.id)


def _video(clip_id: str) -> str:
    """The video of a saved MOSI result's id, "<video id>_<clip>" (results keep ids only;
    video ids may themselves hold underscores, MOSI's clip numbers do not)."""
    return clip_id.rsplit("_", 1)[0]


def video_folds(records: Sequence[TextRecord], folds: int, seed: int) -> list[set[str]]:
    """Videos dealt into `folds` groups of about equal clip counts (largest video first,
    each to the group with fewest clips; ties broken by a seeded shuffle)."""
    clips: dict[str, int] = defaultdict(int)
    for record in records:
        clips[video_of(record)] += 1
    videos = sorted(clips)
    random.Random(seed).shuffle(videos)
    videos.sort(key=lambda v: -clips[v])
    groups: list[set[str]] = [set() for _ in range(folds)]
    sizes = [0] * folds
    for video in videos:
        smallest = sizes.index(min(sizes))
        groups[smallest].add(video)
        sizes[smallest] += clips[video]
    return groups


def _dataset(records: Sequence[TextRecord], states: dict, dims: dict[str, int], name: str):
    samples = [
        Sample(r.id, r.label, {"text": states[r.id].float().numpy()}, text=r.text) for r in records
    ]
    return MultimodalDataset(samples, dims, name)


@dataclass
class RecipeData:
    """The recipe's datasets with some MOSI videos held out (none when shipping)."""

    train: MultimodalDataset
    select: MultimodalDataset
    held: MultimodalDataset
    held_videos: set[str]
    held_rows: list[TextRecord]
    valid_rows: list[TextRecord]
    dims: dict[str, int]


def recipe_data(config: Config, fold: int | None = None, folds: int = 5) -> RecipeData:
    """MOSI train+valid less fold `fold`'s videos (repeated) plus the other paths' train
    rows; selection on the other paths' valid rows; the held-out clips to score. `fold`
    None holds nothing out (the shipped model)."""
    data = config.data
    train_rows, valid_rows = _pool(config)
    pool = train_rows + valid_rows
    held_videos = set() if fold is None else video_folds(pool, folds, FOLD_SEED)[fold]
    name = "none held out" if fold is None else f"fold {fold}"
    target = data.valid_path
    others = [p for p in data.train_paths if p != target]
    repeats = dict(
        zip(data.train_paths, data.train_repeats or [1] * len(data.train_paths), strict=True)
    )
    held = [r for r in pool if video_of(r) in held_videos]
    kept = [r for r in pool if video_of(r) not in held_videos]
    other_train = [r for p in others for r in load_label_csv(p, "train") * repeats.get(p, 1)]
    select = [r for p in others for r in load_label_csv(p, "valid")]
    encoder = make_text_encoder(config.text)
    states = encode_records(pool + list({r.id: r for r in other_train + select}.values()), encoder)
    dims = {**config.model.input_dims, "text": encoder.hidden_size}
    return RecipeData(
        train=_dataset(kept * repeats.get(target, 1) + other_train, states, dims, "train"),
        select=_dataset(select, states, dims, "select"),
        held=_dataset(held, states, dims, name),
        held_videos=held_videos,
        held_rows=held,
        valid_rows=valid_rows,
        dims=dims,
    )


def _pool(config: Config) -> tuple[list[TextRecord], list[TextRecord]]:
    """MOSI train and valid rows: the clips the folds deal out."""
    data = config.data
    if data.kind != "label_csv" or data.valid_path is None:
        raise ValueError("k-fold needs a label_csv config with valid_path (the folded dataset)")
    if all(p == data.valid_path for p in data.train_paths):
        raise ValueError("k-fold selects epochs on the other train paths' valid rows: none given")
    return load_label_csv(data.valid_path, "train"), load_label_csv(data.valid_path, "valid")


def run_fold(config: Config, fold: int, folds: int) -> dict:
    """Train the recipe without fold `fold`'s videos; its predictions on them."""
    d = recipe_data(config, fold, folds)
    result = fit(config, d.train, d.select, build_model(config, d.dims, None))
    pred, label = predict(result.model, make_loader(d.held, 256))
    return {
        "fold": fold,
        "folds": folds,
        "videos": sorted(d.held_videos),
        "ids": [r.id for r in d.held_rows],
        "was_valid": [r in d.valid_rows for r in d.held_rows],
        "pred": pred.tolist(),
        "label": label.tolist(),
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "select_metrics": result.valid_metrics,
    }


def _resample_videos(
    videos: Sequence[str], figures: Callable[[np.ndarray], np.ndarray], resamples: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`figures` of every clip, and its 95 % interval over draws of whole videos."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, video in enumerate(videos):
        rows[video].append(i)
    names = sorted(rows)
    rng = np.random.default_rng(0)
    draws = [
        figures(np.concatenate([rows[v] for v in rng.choice(names, len(names))]))
        for _ in range(resamples)
    ]
    low, high = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
    return figures(np.arange(len(videos))), low, high


def bootstrap_by_video(
    pred: np.ndarray, label: np.ndarray, videos: Sequence[str], resamples: int = 2000
) -> dict[str, tuple[float, float]]:
    """95 % intervals of Non0_acc_2 and MAE, resampling whole videos."""

    def figures(picked: np.ndarray) -> np.ndarray:
        m = mosi_metrics(pred[picked], label[picked])
        return np.array([m["Non0_acc_2"], m["MAE"]])

    _, low, high = _resample_videos(videos, figures, resamples)
    return {"Non0_acc_2": (low[0], high[0]), "MAE": (low[1], high[1])}


def load_folds(out: Path, tag: str, folds: int) -> list[dict]:
    """The saved folds of `tag`; "a+b+c" averages the predictions of runs a, b and c (a seed
    ensemble, scored on the same clips)."""
    runs = []
    for part in tag.split("+"):
        paths = [out / part / f"fold{i}-of-{folds}.json" for i in range(folds)]
        absent = [str(p) for p in paths if not p.exists()]
        if absent:
            raise FileNotFoundError(f"folds not run yet: {', '.join(absent)}")
        runs.append([json.loads(p.read_text()) for p in paths])
    joined = []
    for parts in zip(*runs, strict=True):
        if any(p["ids"] != parts[0]["ids"] for p in parts):
            raise ValueError(f"{tag}: runs scored different clips (another fold seed?)")
        pred = np.mean([p["pred"] for p in parts], axis=0)
        epochs = "/".join(str(p["best_epoch"]) for p in parts)
        joined.append({**parts[0], "pred": pred.tolist(), "best_epoch": epochs})
    return joined


def pooled(results: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    pred = np.concatenate([r["pred"] for r in results])
    label = np.concatenate([r["label"] for r in results])
    return pred, label, [_video(i) for r in results for i in r["ids"]]


def paired_difference(
    tried: Sequence[dict], baseline: Sequence[dict], resamples: int = 2000
) -> dict[str, tuple[float, float, float]]:
    """`tried` minus `baseline` out of fold (Non0_acc_2 in points, MAE): point and 95 %
    interval, resampling whole videos (the same ones on both sides)."""
    a, label, videos = pooled(tried)
    b, _, _ = pooled(baseline)

    def figures(picked: np.ndarray) -> np.ndarray:
        ma, mb = mosi_metrics(a[picked], label[picked]), mosi_metrics(b[picked], label[picked])
        return np.array([100 * (ma["Non0_acc_2"] - mb["Non0_acc_2"]), ma["MAE"] - mb["MAE"]])

    point, low, high = _resample_videos(videos, figures, resamples)
    return {
        name: (float(p), float(lo), float(hi))
        for name, p, lo, hi in zip(("Non0_acc_2", "MAE"), point, low, high, strict=True)
    }


def against_line(results: Sequence[dict], baseline: Sequence[dict], name: str) -> str:
    """One sentence: the baseline's pooled figures and the paired difference with them."""
    d = paired_difference(results, baseline)
    alone = mosi_metrics(*pooled(baseline)[:2])
    acc, mae = d["Non0_acc_2"], d["MAE"]
    return (
        f"Against `{name}` (pooled out of fold {100 * alone['Non0_acc_2']:.2f} Non0_acc_2, "
        f"MAE {alone['MAE']:.3f}), same clips, 95 % intervals over videos: Non0_acc_2 "
        f"{acc[0]:+.2f} points [{acc[1]:+.2f}, {acc[2]:+.2f}], "
        f"MAE {mae[0]:+.3f} [{mae[1]:+.3f}, {mae[2]:+.3f}].\n"
    )


def summary(results: Sequence[dict], command: str, what: str) -> str:
    """README block: per-fold figures, their mean and spread, pooled out-of-fold figures."""
    per_fold = [mosi_metrics(np.array(r["pred"]), np.array(r["label"])) for r in results]
    pred, label, videos = pooled(results)
    was_valid = np.concatenate([r["was_valid"] for r in results]).astype(bool)
    overall = mosi_metrics(pred, label)
    ci = bootstrap_by_video(pred, label, videos)
    valid_part = mosi_metrics(pred[was_valid], label[was_valid])
    lines = [
        f"`{command}` (load {os.getloadavg()[0]:.1f}): {what}, trained {len(results)} times, "
        f"each without one fold of MOSI train+valid videos ({len(set(videos))} videos, "
        f"{len(pred)} clips), epoch picked on MOSEI valid; every figure is on clips the model "
        "neither trained nor selected on.",
        "",
        "| MOSI train+valid, held-out folds | clips | Non0_acc_2 | Non0_F1 | MAE | Corr "
        "| best epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, m in zip(results, per_fold, strict=True):
        lines.append(
            f"| fold {r['fold']} | {len(r['pred'])} | {100 * m['Non0_acc_2']:.2f} | "
            f"{100 * m['Non0_F1_score']:.2f} | {m['MAE']:.3f} | {m['Corr']:.3f} | "
            f"{r['best_epoch']} |"
        )
    acc = [100 * m["Non0_acc_2"] for m in per_fold]
    mae = [m["MAE"] for m in per_fold]
    lines += [
        f"| mean ± sd over folds | | {statistics.mean(acc):.2f} ± {statistics.stdev(acc):.2f} "
        f"| | {statistics.mean(mae):.3f} ± {statistics.stdev(mae):.3f} | | |",
        f"| pooled out-of-fold (95 % CI over videos) | {len(pred)} | "
        f"{100 * overall['Non0_acc_2']:.2f} [{100 * ci['Non0_acc_2'][0]:.1f}, "
        f"{100 * ci['Non0_acc_2'][1]:.1f}] | {100 * overall['Non0_F1_score']:.2f} | "
        f"{overall['MAE']:.3f} [{ci['MAE'][0]:.3f}, {ci['MAE'][1]:.3f}] | "
        f"{overall['Corr']:.3f} | |",
        f"| of which MOSI valid clips | {int(was_valid.sum())} | "
        f"{100 * valid_part['Non0_acc_2']:.2f} | {100 * valid_part['Non0_F1_score']:.2f} | "
        f"{valid_part['MAE']:.3f} | {valid_part['Corr']:.3f} | |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/text.yaml"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold", type=int, help="train and score this fold (0-based)")
    parser.add_argument("--out", type=Path, default=Path("runs/kfold"))
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="config overrides"
    )
    parser.add_argument(
        "--tag",
        help="name of this run's results (default: the config's name); to report, a+b+c "
        "averages runs a, b and c (a seed ensemble)",
    )
    parser.add_argument("--against", help="report: the paired difference with this tag")
    parser.add_argument(
        "--readme", action="store_true", help="join the saved folds into README's text-kfold block"
    )
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    torch.set_num_threads(config.train.threads)
    tag = args.tag or config.name
    if args.fold is not None:
        if not 0 <= args.fold < args.folds:
            parser.error(f"--fold must be in 0..{args.folds - 1}")
        result = run_fold(config, args.fold, args.folds)
        (args.out / tag).mkdir(parents=True, exist_ok=True)
        (args.out / tag / f"fold{args.fold}-of-{args.folds}.json").write_text(json.dumps(result))
        m = mosi_metrics(np.array(result["pred"]), np.array(result["label"]))
        print(f"fold {args.fold}: Non0_acc_2 {100 * m['Non0_acc_2']:.2f}, MAE {m['MAE']:.3f}")
        return
    try:
        results = load_folds(args.out, tag, args.folds)
        baseline = load_folds(args.out, args.against, args.folds) if args.against else None
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    command = " ".join(
        ["python -m stream_mmsa.train.kfold", *(sys.argv[1:] if argv is None else argv)]
    )
    what = f"the recipe of `{args.config}`" + (f" with {' '.join(args.set)}" if args.set else "")
    if "+" in tag:
        what += f", predictions averaged over the runs {tag.replace('+', ', ')}"
    body = summary(results, command, what)
    if baseline is not None:
        body += "\n" + against_line(results, baseline, args.against)
    publish("text-kfold", body, write=args.readme)


if __name__ == "__main__":
    main()
