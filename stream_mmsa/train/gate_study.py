"""Does the evaluator decide well? Judging a fitted gate on held-out decisions.

Shared by the synthetic ablation (`ablation.py`) and the spoken MOSI study (`spoken.py`):
given samples scored under every decision (`Decisions`, from a frozen backbone), compare
the gate with always / never imagine, the oracle (best decision per sample, the ceiling),
and "plain": an always-imagine prediction corrected by a small network that reads the
same evaluator inputs and quality signals, with no gate (so a gain of the gate cannot
come from the extra inputs alone). Differences get paired bootstrap 95 % intervals over
groups (samples, or utterances whose windows are not independent), pooled over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..model.evaluator import Decisions, gate_decisions, predicted_gain, subset_index
from ..model.fusion import FusionModel
from ..model.prompts import N_PATTERNS

METHODS = ("gate", "always", "never", "oracle", "plain")


@dataclass
class Judged:
    """Per-sample |errors| of every method on one held-out set, and the evaluator's ranking.

    errors[method] (N,); groups (N,) ints for the bootstrap; predicted / realised: the
    evaluator's score and the realised gain |ŷ_skip − y| − |ŷ_imagine − y| for every
    (sample, missing modality) with that modality the only one missing.
    """

    errors: dict[str, np.ndarray]
    groups: np.ndarray
    predicted: np.ndarray
    realised: np.ndarray
    imagine_rate: float


def _features(data: Decisions) -> Tensor:
    x = data.inputs
    pattern = torch.nn.functional.one_hot(x.pattern.long(), N_PATTERNS).float()
    always = data.pred.gather(1, subset_index(data.missing)[:, None])
    return torch.cat([x.available.flatten(1), x.recalled, x.quality, pattern, always], 1)


def fit_plain(fit: Decisions, seed: int, steps: int = 600) -> nn.Module:
    """The no-gate baseline: always imagine, plus a correction from the evaluator's inputs.

    Same data as the evaluator, L1 to the label. The correction starts at zero (the
    baseline starts as always imagine, not as a random offset) and, being a free
    regression on every input, stops early on a held-out share of the groups.
    """
    torch.manual_seed(seed)
    x, y = _features(fit), fit.label
    always = x[:, -1]
    train, stop = fit.stop_split(seed)
    net = nn.Sequential(nn.LayerNorm(x.shape[1]), nn.Linear(x.shape[1], 64), nn.GELU())
    net.append(nn.Linear(64, 1))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    best, state = math.inf, None
    for step in range(1, steps + 1):
        pred = always[train] + net(x[train]).squeeze(-1)
        loss = (pred - y[train]).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            with torch.no_grad():
                held = float((always[stop] + net(x[stop]).squeeze(-1) - y[stop]).abs().mean())
            if held < best:
                best, state = held, {k: v.clone() for k, v in net.state_dict().items()}
    if state is not None:
        net.load_state_dict(state)
    return net.eval()


@torch.no_grad()
def judge(model: FusionModel, test: Decisions, plain: nn.Module, groups: np.ndarray) -> Judged:
    """Errors of every method on `test` (rows with a missing modality only)."""
    rows = test.missing.any(1)
    test = test.rows(rows)
    gate = gate_decisions(model, test)
    corrected = _features(test)[:, -1] + plain(_features(test)).squeeze(-1)
    errors = {
        "gate": test.errors(gate),
        "always": test.errors(test.missing),
        "never": test.errors(torch.zeros_like(test.missing)),
        "oracle": test.oracle(),
        "plain": (corrected - test.label).abs(),
    }
    gain = predicted_gain(model, test)
    single = test.missing.sum(1) == 1
    predicted, realised = [], []
    for j in range(3):
        sel = single & test.missing[:, j]
        if bool(sel.any()):
            only = torch.zeros(int(sel.sum()), 3, dtype=torch.bool)
            only[:, j] = True
            part = test.rows(sel)
            skip = part.errors(torch.zeros_like(only))
            realised.append(skip - part.errors(only))
            predicted.append(gain[sel, j])
    imagined = float(gate.sum()) / max(1, int(test.missing.sum()))
    return Judged(
        {k: v.numpy().astype(np.float64) for k, v in errors.items()},
        groups[rows.numpy()],
        torch.cat(predicted).numpy() if predicted else np.zeros(0),
        torch.cat(realised).numpy() if realised else np.zeros(0),
        imagined,
    )


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return math.nan
    ranks = _ranks(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


Study = Sequence[dict[str, Judged]]
"""Per seed: held-out results per setting (the same samples in every setting of a seed)."""


def _mean_errors(study: Study, picks: Sequence[dict[str, np.ndarray]] | None) -> dict[str, float]:
    """Mean |error| per method (settings averaged, then seeds), and "fixed": per setting the
    better of always and never on these very samples (the strongest fixed policy)."""
    methods = next(iter(study[0].values())).errors
    totals = {k: 0.0 for k in (*methods, "fixed")}
    for i, seed in enumerate(study):
        for setting, judged in seed.items():
            rows = None if picks is None else picks[i][setting]
            means = {
                k: float(v.mean() if rows is None else v[rows].mean())
                for k, v in judged.errors.items()
            }
            means["fixed"] = min(means["always"], means["never"])
            for k in totals:
                totals[k] += means[k] / (len(seed) * len(study))
    return totals


def bootstrap(
    study: Study,
    resamples: int = 2000,
    seed: int = 0,
    shared: bool = False,
    also: dict[str, tuple[str, str]] | None = None,
) -> dict[str, dict[str, float]]:
    """Point and 95 % interval of gate − fixed, gate − plain, gate − oracle and the means.

    Each draw resamples every seed's groups with replacement (windows of one group stay
    together), the same draw for every setting of that seed: the comparison is paired.
    shared=True: the seeds hold the same groups (the same utterances under other random
    draws), so one draw serves every seed and the seeds add no false precision.
    also: further differences to report, name -> (method, method or "fixed").
    """
    rng = np.random.default_rng(seed)
    point = _mean_errors(study, None)
    uniques = [np.unique(np.concatenate([j.groups for j in s.values()])) for s in study]
    draws = []
    for _ in range(resamples):
        picks = []
        common = rng.choice(len(uniques[0]), len(uniques[0]))
        for s, unique in zip(study, uniques, strict=True):
            chosen = common if shared else rng.choice(len(unique), len(unique))
            counts = np.bincount(chosen, minlength=len(unique))
            picks.append(
                {
                    k: np.repeat(
                        np.arange(len(j.groups)), counts[np.searchsorted(unique, j.groups)]
                    )
                    for k, j in s.items()
                }
            )
        draws.append(_mean_errors(study, picks))
    out = {}
    for name, (a, b) in {
        "gate - fixed": ("gate", "fixed"),
        "gate - plain": ("gate", "plain"),
        "gate - oracle": ("gate", "oracle"),
        **(also or {}),
    }.items():
        values = np.array([d[a] - d[b] for d in draws])
        lo, hi = np.percentile(values, [2.5, 97.5])
        out[name] = {
            "difference": point[a] - point[b],
            "ci95_low": float(lo),
            "ci95_high": float(hi),
        }
    return out | {"mean": point}
