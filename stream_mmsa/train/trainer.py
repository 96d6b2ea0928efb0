"""Training loop: random missingness, double-flow losses, early stopping on validation.

The trainer knows nothing about the network's internals: it applies a missing
protocol to each batch, asks the model for its loss terms on the complete and
the missing flow, and keeps the weights that score best on validation.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..model.evaluator import fit_evaluator, score_decisions
from ..model.sentiment import SentimentModel
from ..model.types import MODALITIES, MultimodalBatch
from .datasets import MultimodalDataset, make_loader
from .evaluate import predict
from .metrics import mosi_metrics
from .protocols import RandomMissing, protocol_settings


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    model: SentimentModel
    best_epoch: int
    valid_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _selection_score(metrics: dict[str, float], metric: str) -> float:
    """Lower is better, whatever the metric."""
    return metrics["select_MAE"] if metric == "mae" else -metrics[metric]


def validation_batches(
    dataset: MultimodalDataset, batch_size: int, seed: int
) -> list[tuple[str, list[MultimodalBatch]]]:
    """The validation views used for selection: complete, plus every pattern the data allows."""
    loader = make_loader(dataset, batch_size, shuffle=False, seed=seed)
    complete = list(loader)
    views = [("complete", complete)]
    has = complete[0].present.any(0) if complete else torch.zeros(3, dtype=torch.bool)
    if bool(has.all()):
        gen = torch.Generator().manual_seed(seed)
        for protocol in protocol_settings("modality"):
            if protocol.name != "complete":
                views.append((protocol.name, [protocol.apply(b, gen) for b in complete]))
    return views


def fit(
    config: Config,
    train: MultimodalDataset,
    valid: MultimodalDataset,
    model: SentimentModel,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train `model` on `train`, select the epoch on `valid`, then fit the evaluator and its
    τ on the validation views (samples the backbone was not fitted on)."""
    cfg = config.train
    torch.manual_seed(config.seed)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model.to(device)
    loader = make_loader(train, cfg.batch_size, shuffle=True, seed=config.seed)
    views = validation_batches(valid, 256, config.seed)
    optimizer = torch.optim.AdamW(
        model.param_groups(cfg.lr, config.text.lr), weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    protocol = RandomMissing(drop_rate=cfg.drop_rate, element_noise=cfg.element_noise)
    gen = torch.Generator().manual_seed(config.seed)

    best_score, best_state, best_epoch, stale = math.inf, None, 0, 0
    best_metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        totals: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch")
        for batch in bar:
            complete = batch.to(device)
            missing = protocol.apply(batch, gen).to(device)
            losses = model.training_losses(complete, missing, config.loss, distill=cfg.distill)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}")
        row = {f"train_{k}": v / max(len(loader), 1) for k, v in totals.items()}
        metrics = _view_metrics(model, views, device)
        row.update({"epoch": epoch, **metrics})
        history.append(row)
        score = _selection_score(metrics, cfg.select_metric)
        scheduler.step(score)
        if on_epoch:
            on_epoch(row)
        if score < best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            best_metrics = metrics
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    complete = dict(views)["complete"]
    pairs = [
        (_apply_text(model, c, device), _apply_text(model, m, device))
        for name, batches in views
        if name != "complete"
        for c, m in zip(complete, batches, strict=True)
    ]
    if pairs:
        fit_evaluator(model.fusion, score_decisions(model.fusion, pairs), seed=config.seed)
        best_metrics = _view_metrics(model, views, device)
    never_seen = ~_seen_modalities(train)
    model.fusion.tau[:, never_seen.to(model.fusion.tau.device)] = math.inf
    return TrainResult(model, best_epoch, best_metrics, history, time.perf_counter() - start)


def _seen_modalities(dataset: MultimodalDataset) -> torch.Tensor:
    """(3,) bool: which modalities any training sample has.

    A modality never seen in training has no learnt generator, so its gate is closed
    (τ = +inf in every availability pattern): the evaluator never imagines it and the
    model adapts without it.
    """
    seen = {m for sample in dataset.samples for m in sample.features}
    return torch.tensor([m in seen for m in MODALITIES])


def _apply_text(
    model: SentimentModel, batch: MultimodalBatch, device: torch.device
) -> MultimodalBatch:
    with torch.inference_mode():
        return model.prepare(batch.to(device))


def _view_metrics(
    model: SentimentModel, views: list[tuple[str, list[MultimodalBatch]]], device: torch.device
) -> dict[str, float]:
    """MOSI metrics on the complete view, plus select_MAE: the mean MAE over all views."""
    maes = []
    out: dict[str, float] = {}
    for name, batches in views:
        pred, label = predict(model, batches, device)
        metrics = mosi_metrics(pred, label)
        maes.append(metrics["MAE"])
        if name == "complete":
            out.update(metrics)
    out["select_MAE"] = float(sum(maes) / len(maes))
    return out
