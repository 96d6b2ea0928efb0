"""Text setup study: frozen MiniLM vs fine-tuning its top k layers, scored on MOSI valid.

Each setup trains `TextEncoder.top` (the last k layers; nothing for k=0) jointly with a small
attention-pooling + MLP regression head, on cached frozen-bottom states of MOSI train + MOSEI
train (L1 loss, Adam, batch 64, length-bucketed batches). After every epoch it scores MOSI
valid and MOSEI valid; the reported epoch is the one with the lowest MOSI-valid MAE (MAE, not
Non0_acc_2: on 229 rows one sample moves accuracy by 0.45 points, MAE is far less jumpy).
Because that selects and reports on the same 229 rows, the "mosei-sel" columns also give MOSI
valid at the epoch chosen by MOSEI-valid MAE instead: a less optimistic estimate.

Needs ../shared/data (MOSI/MOSEI label.csv, train and valid only; never test data). Run:
    .venv/bin/python benchmarks/text_study.py --setups k0 k1 k2 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stream_mmsa.features.text import TextEncoder, encode_records, pad_states
from stream_mmsa.paths import cache_root
from stream_mmsa.train.datasets import TextRecord, load_label_csv

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def normalize_text(text: str) -> str:
    """MOSI style: lower case, apostrophes dropped ("don't" -> "dont"), no punctuation."""
    text = re.sub(r"['’`]", "", text.lower())
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def load_split(dataset: str, split: str, normalize: bool) -> list[TextRecord]:
    records = load_label_csv(DATA / dataset / "label.csv", split)
    return [replace(r, text=normalize_text(r.text)) for r in records] if normalize else records


@dataclass(frozen=True)
class Setup:
    """One trained configuration; epochs are MOSI train x mosi_repeat + mosei_per_epoch rows."""

    k: int
    mosi_repeat: int = 1
    mosei_per_epoch: int | None = None  # None: all of MOSEI train each epoch; 0: MOSI only
    max_epochs: int = 12
    patience: int = 3
    lr_head: float = 1e-3
    lr_top: float = 5e-5
    mosi_finetune_epochs: int = 0  # a last stage on MOSI train only, lr / 5, same selection
    normalize: bool = False


SETUPS = {
    "k0": Setup(k=0),
    "k0-mosi-only": Setup(k=0, mosei_per_epoch=0, max_epochs=40, patience=6),
    "k0-mosi4": Setup(k=0, mosi_repeat=4),
    "k0-mosi4-ft": Setup(k=0, mosi_repeat=4, mosi_finetune_epochs=6),
    "k0-norm": Setup(k=0, normalize=True),
    "k0-mosi4-norm": Setup(k=0, mosi_repeat=4, normalize=True),
}
for _k in (1, 2, 3):
    SETUPS[f"k{_k}"] = Setup(k=_k, mosi_repeat=4, mosei_per_epoch=6000, max_epochs=8, patience=2)
    SETUPS[f"k{_k}-norm"] = replace(SETUPS[f"k{_k}"], normalize=True)
    SETUPS[f"k{_k}-ft"] = replace(SETUPS[f"k{_k}"], mosi_finetune_epochs=4)
SETUPS["k2-lr2e-5"] = replace(SETUPS["k2"], lr_top=2e-5)
SETUPS["k2-lr1e-4"] = replace(SETUPS["k2"], lr_top=1e-4)
SETUPS["k2-mosi1"] = replace(SETUPS["k2"], mosi_repeat=1)


class AttentionHead(nn.Module):
    """Attention pooling over tokens, then a one-hidden-layer MLP to a score."""

    def __init__(self, dim: int, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        weights = self.score(states).squeeze(-1).masked_fill(~mask, -math.inf).softmax(-1)
        return self.mlp((weights.unsqueeze(-1) * states).sum(1)).squeeze(-1)


class Regressor(nn.Module):
    def __init__(self, top: nn.Module, dim: int) -> None:
        super().__init__()
        self.top = top
        self.head = AttentionHead(dim)

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        return self.head(self.top(states, mask), mask)


Item = tuple[Tensor, float]


def batches(items: Sequence[Item], size: int, gen: torch.Generator) -> Iterator[list[Item]]:
    """Shuffled batches of similar length (sorted within chunks of 20 batches): less padding."""
    order = torch.randperm(len(items), generator=gen).tolist()
    out: list[list[Item]] = []
    chunk = size * 20
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(items[i][0]))
        out.extend([items[i] for i in part[j : j + size]] for j in range(0, len(part), size))
    for i in torch.randperm(len(out), generator=gen).tolist():
        yield out[i]


def collate(batch: Sequence[Item]) -> tuple[Tensor, Tensor, Tensor]:
    states, mask = pad_states([s for s, _ in batch])
    return states.float(), mask, torch.tensor([y for _, y in batch])


def mmsa_metrics(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """MMSA regression metrics: Non0/Has0 binary accuracy (%), MAE, Pearson Corr."""
    nonzero = label != 0
    return {
        "Non0_acc_2": 100 * float(np.mean((pred[nonzero] > 0) == (label[nonzero] > 0))),
        "Has0_acc_2": 100 * float(np.mean((pred >= 0) == (label >= 0))),
        "MAE": float(np.mean(np.abs(pred - label))),
        "Corr": float(np.corrcoef(pred, label)[0, 1]),
    }


def evaluate(model: Regressor, items: Sequence[Item]) -> dict[str, float]:
    model.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    pred = np.zeros(len(items))
    with torch.no_grad():
        for start in range(0, len(order), 256):
            idx = order[start : start + 256]
            states, mask, _ = collate([items[i] for i in idx])
            pred[idx] = model(states, mask).numpy()
    return mmsa_metrics(pred, np.array([y for _, y in items]))


def run_epochs(
    model: Regressor,
    optimizer: torch.optim.Optimizer,
    epoch_items: Iterator[list[Item]],
    max_epochs: int,
    patience: int,
    valid: dict[str, list[Item]],
    gen: torch.Generator,
) -> tuple[dict, list[dict[str, dict[str, float]]]]:
    """Train with early stopping on MOSI-valid MAE; returns the best state and per-epoch scores."""
    history = [{name: evaluate(model, items) for name, items in valid.items()}]
    best_state, best, stale = copy.deepcopy(model.state_dict()), history[0]["mosi"]["MAE"], 0
    for _ in range(max_epochs):
        model.train()
        for batch in batches(next(epoch_items), 64, gen):
            states, mask, labels = collate(batch)
            loss = nn.functional.l1_loss(model(states, mask), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        history.append({name: evaluate(model, items) for name, items in valid.items()})
        if history[-1]["mosi"]["MAE"] < best:
            best, stale, best_state = (
                history[-1]["mosi"]["MAE"],
                0,
                copy.deepcopy(model.state_dict()),
            )
        else:
            stale += 1
            if stale >= patience:
                break
    return best_state, history


def train(setup: Setup, seed: int, encoder: TextEncoder, data: dict[str, list[Item]]) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Regressor(copy.deepcopy(encoder.top), encoder.hidden_size)
    groups = [{"params": model.head.parameters(), "lr": setup.lr_head}]
    if setup.k:
        groups.append({"params": model.top.parameters(), "lr": setup.lr_top})
    optimizer = torch.optim.Adam(groups)
    mosei, mosi = data["mosei_train"], data["mosi_train"]
    per_epoch = len(mosei) if setup.mosei_per_epoch is None else setup.mosei_per_epoch

    def mixed() -> Iterator[list[Item]]:
        cursor, perm = 0, torch.randperm(len(mosei), generator=gen).tolist()
        while True:
            take = []
            while len(take) < per_epoch:
                if cursor == len(perm):
                    cursor, perm = 0, torch.randperm(len(mosei), generator=gen).tolist()
                step = min(per_epoch - len(take), len(perm) - cursor)
                take += perm[cursor : cursor + step]
                cursor += step
            yield mosi * setup.mosi_repeat + [mosei[i] for i in take]

    def mosi_only() -> Iterator[list[Item]]:
        while True:
            yield mosi

    valid = {"mosi": data["mosi_valid"], "mosei": data["mosei_valid"]}
    start, cpu_start = time.perf_counter(), time.process_time()
    state, history = run_epochs(
        model, optimizer, mixed(), setup.max_epochs, setup.patience, valid, gen
    )
    epochs = len(history) - 1
    mosei_sel = min(history[1:], key=lambda h: h["mosei"]["MAE"])["mosi"]
    model.load_state_dict(state)
    if setup.mosi_finetune_epochs:
        for group in optimizer.param_groups:
            group["lr"] /= 5
        state, tail = run_epochs(
            model, optimizer, mosi_only(), setup.mosi_finetune_epochs, 2, valid, gen
        )
        history += tail[1:]
        model.load_state_dict(state)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    best = evaluate(model, data["mosi_valid"])
    top_params = sum(p.numel() for p in model.top.parameters())
    head_params = sum(p.numel() for p in model.head.parameters())
    return {
        **best,
        "mosei_sel_Non0": mosei_sel["Non0_acc_2"],
        "mosei_sel_MAE": mosei_sel["MAE"],
        "epochs": epochs,
        "best_epoch": min(range(len(history)), key=lambda i: history[i]["mosi"]["MAE"]),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "curve": [(round(h["mosi"]["MAE"], 3), round(h["mosi"]["Non0_acc_2"], 1)) for h in history],
        "top_mb16": top_params * 2 / 1e6,
        "state_mb32": (top_params + head_params) * 4 / 1e6,
    }


def load_features(setup: Setup, encoder: TextEncoder) -> dict[str, list[Item]]:
    """Frozen-bottom states for the four splits, from the feature cache (encoded once)."""
    data = {}
    for dataset in ("mosi", "mosei"):
        for split in ("train", "valid"):
            records = load_split(dataset, split, setup.normalize)
            feats = encode_records(records, encoder)
            data[f"{dataset}_{split}"] = [(feats[r.id], r.label) for r in records]
    return data


def run_key(setup: Setup, seed: int) -> str:
    return json.dumps({**asdict(setup), "seed": seed}, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", nargs="+", default=["k0", "k1", "k2"], choices=SETUPS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--results",
        type=Path,
        default=cache_root() / "benchmarks" / "text_study.jsonl",
        help="per-seed results, appended as they finish; runs already there are not redone",
    )
    args = parser.parse_args()
    if not (DATA / "mosi" / "label.csv").is_file():
        raise SystemExit(f"no data at {DATA}; this study needs MOSI/MOSEI label.csv")
    torch.set_num_threads(args.threads)
    done: dict[str, dict] = {}
    if args.results.is_file():
        for line in args.results.read_text().splitlines():
            entry = json.loads(line)
            done[entry["key"]] = entry["result"]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    columns = ["Non0_acc_2", "Has0_acc_2", "MAE", "Corr", "mosei_sel_Non0", "mosei_sel_MAE"]
    header = f"{'setup':16}" + "".join(f"{c:>17}" for c in columns)
    rows = []
    for name in args.setups:
        setup = SETUPS[name]
        todo = [s for s in args.seeds if run_key(setup, s) not in done]
        if todo:
            encoder = TextEncoder(trainable_top_layers=setup.k)
            data = load_features(setup, encoder)
        for seed in todo:
            result = train(setup, seed, encoder, data)
            done[run_key(setup, seed)] = result
            with args.results.open("a") as f:
                f.write(json.dumps({"key": run_key(setup, seed), "result": result}) + "\n")
            print(name, seed, result, flush=True)
        results = [done[run_key(setup, s)] for s in args.seeds]
        cells = ""
        for c in columns:
            values = [r[c] for r in results]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells += f"{statistics.mean(values):>10.3f} ±{sd:5.2f}"
        rows.append(
            f"{name:16}{cells}  epochs {[r['best_epoch'] for r in results]}"
            f"  {statistics.mean(r['seconds'] for r in results):.0f} s/seed"
            f" ({statistics.mean(r['cpu_seconds'] for r in results):.0f} s CPU)"
            f"  top {results[0]['top_mb16']:.1f} MB fp16,"
            f" top+head {results[0]['state_mb32']:.1f} MB fp32"
        )
    print(header, *rows, sep="\n", flush=True)


if __name__ == "__main__":
    main()
