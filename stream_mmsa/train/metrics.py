"""Regression metrics with the exact definitions of MMSA's metricsTop.py.

Numbers must be comparable with published MMSA tables, so the quirks are kept:
numpy's round-half-to-even for the multi-class accuracies, class thresholds
compared in the input's float precision (MMSA compares float32 tensors), and
weighted F1 with the truth first (weighted F1 is not symmetric). Unlike MMSA,
values are not rounded to 4 digits and accuracies stay fractions in [0, 1];
Corr is 0.0 instead of nan when either side is constant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import f1_score

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


def _flat(values: ArrayLike) -> np.ndarray:
    """1-D float array, keeping float32/float64 as given (class thresholds depend on it)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype in (torch.float16, torch.bfloat16):
            values = values.float()
        values = values.numpy()
    array = np.asarray(values).reshape(-1)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def _pair(pred: ArrayLike, label: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, y = _flat(pred), _flat(label)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} labels")
    if p.size == 0:
        raise ValueError("no predictions to score")
    return p, y


def _corr(p: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side has no variance (e.g. a constant predictor)."""
    p64, y64 = p.astype(np.float64), y.astype(np.float64)
    if p64.std() == 0 or y64.std() == 0:
        return 0.0
    return float(np.corrcoef(p64, y64)[0, 1])


def _mult_acc(p: np.ndarray, y: np.ndarray, bound: float) -> float:
    """Share of equal round(clip(., -bound, bound)) classes, numpy round-half-to-even."""
    return float(
        np.mean(np.round(np.clip(p, -bound, bound)) == np.round(np.clip(y, -bound, bound)))
    )


def _weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(f1_score(truth, pred, average="weighted", zero_division=0.0))


def mosi_metrics(pred: ArrayLike, label: ArrayLike) -> dict[str, float]:
    """CMU-MOSI / MOSEI metrics on the -3..3 scale.

    Has0: y >= 0 vs pred >= 0 over all samples. Non0: y > 0 vs pred > 0 over the
    samples with y != 0 (nan when there are none). Mult_acc_5/7: rounded classes
    after clipping to +-2 / +-3. MAE and Corr on the unclipped values.
    """
    p, y = _pair(pred, label)
    nonzero = y != 0
    if nonzero.any():
        non0_truth, non0_pred = y[nonzero] > 0, p[nonzero] > 0
        non0_acc = float(np.mean(non0_truth == non0_pred))
        non0_f1 = _weighted_f1(non0_truth, non0_pred)
    else:
        non0_acc = non0_f1 = float("nan")
    has0_truth, has0_pred = y >= 0, p >= 0
    return {
        "Has0_acc_2": float(np.mean(has0_truth == has0_pred)),
        "Has0_F1_score": _weighted_f1(has0_truth, has0_pred),
        "Non0_acc_2": non0_acc,
        "Non0_F1_score": non0_f1,
        "Mult_acc_5": _mult_acc(p, y, 2.0),
        "Mult_acc_7": _mult_acc(p, y, 3.0),
        "MAE": float(np.mean(np.abs(p.astype(np.float64) - y.astype(np.float64)))),
        "Corr": _corr(p, y),
    }


_SIMS_INNER_EDGES = {
    2: (0.0,),
    3: (-0.1, 0.1),
    5: (-0.7, -0.1, 0.1, 0.7),
}
"""Upper-inclusive class edges inside [-1, 1]: class k holds edges[k-1] < v <= edges[k]."""


def _sims_classes(values: np.ndarray, classes: int) -> np.ndarray:
    edges = np.asarray(_SIMS_INNER_EDGES[classes], dtype=values.dtype)
    return np.searchsorted(edges, values, side="left")


def sims_metrics(pred: ArrayLike, label: ArrayLike) -> dict[str, float]:
    """CH-SIMS metrics on the -1..1 scale; both sides are clipped to [-1, 1] first.

    Bins: acc_2 [-1, 0], (0, 1]; acc_3 [-1, -0.1], (-0.1, 0.1], (0.1, 1];
    acc_5 [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1].
    F1_score is weighted F1 on the 2-class split; MAE after clipping.
    """
    p, y = _pair(pred, label)
    p, y = np.clip(p, -1.0, 1.0), np.clip(y, -1.0, 1.0)
    out = {
        f"Mult_acc_{k}": float(np.mean(_sims_classes(p, k) == _sims_classes(y, k)))
        for k in (2, 3, 5)
    }
    out["F1_score"] = _weighted_f1(_sims_classes(y, 2), _sims_classes(p, 2))
    out["MAE"] = float(np.mean(np.abs(p.astype(np.float64) - y.astype(np.float64))))
    out["Corr"] = _corr(p, y)
    return out
