import math

import numpy as np
import pytest
import torch

from stream_mmsa.train.metrics import mosi_metrics, sims_metrics

# Hand-worked MOSI case: index 2 has label 0 (Has0 only), 0.5 and 2.5 test
# numpy's round-half-to-even, index 0 tests the +-2 / +-3 clipping.
MOSI_PRED = [2.4, -0.4, 0.5, 1.5, -0.2, 2.5]
MOSI_LABEL = [3.0, -1.0, 0.0, -2.2, 0.4, 1.5]


def test_mosi_metrics_by_hand():
    got = mosi_metrics(MOSI_PRED, MOSI_LABEL)
    expected = {
        # y>=0: T F T F T T ; p>=0: T F T T F T -> 4/6 agree
        "Has0_acc_2": 4 / 6,
        # class T (4 samples): TP 3, FP 1, FN 1 -> F1 3/4; class F (2): TP 1, FP 1, FN 1 -> 1/2
        # weighted by truth counts: (4 * 3/4 + 2 * 1/2) / 6
        "Has0_F1_score": (4 * 0.75 + 2 * 0.5) / 6,
        # drop index 2; y>0: T F F T T ; p>0: T F T F T -> 3/5 agree
        "Non0_acc_2": 3 / 5,
        # class T (3): TP 2, FP 1, FN 1 -> 2/3; class F (2): TP 1, FP 1, FN 1 -> 1/2
        "Non0_F1_score": (3 * 2 / 3 + 2 * 0.5) / 5,
        # clip +-2 then round: p 2 0 0 2 0 2 ; y 2 -1 0 -2 0 2 -> 4/6
        "Mult_acc_5": 4 / 6,
        # clip +-3 then round (half to even: 0.5 -> 0, 2.5 -> 2):
        # p 2 0 0 2 0 2 ; y 3 -1 0 -2 0 2 -> 3/6 (round-half-up would give 1/6)
        "Mult_acc_7": 3 / 6,
        # |errors| 0.6 0.6 0.5 3.7 0.6 1.0 -> 7.0 / 6
        "MAE": 7.0 / 6,
        # mean p 1.05, mean y 1.7/6; sum dp*dy 6.185, sum dp^2 8.095, sum dy^2 16.768333
        "Corr": 6.185 / math.sqrt(8.095 * 16.768333),
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key
    assert all(isinstance(v, float) for v in got.values())


def test_mosi_metrics_accepts_tensors_and_arrays():
    as_tensor = mosi_metrics(torch.tensor(MOSI_PRED), torch.tensor(MOSI_LABEL).view(-1, 1))
    as_array = mosi_metrics(np.array(MOSI_PRED), np.array(MOSI_LABEL))
    for key, value in as_array.items():
        assert as_tensor[key] == pytest.approx(value, rel=1e-5), key


def test_mosi_metrics_edge_cases():
    constant = mosi_metrics([0.3] * 4, [1.0, -1.0, 2.0, 0.5])
    assert constant["Corr"] == 0.0  # not nan, not a crash
    assert constant["Has0_acc_2"] == 3 / 4
    all_zero = mosi_metrics([0.5, -0.5], [0.0, 0.0])
    assert math.isnan(all_zero["Non0_acc_2"]) and math.isnan(all_zero["Non0_F1_score"])
    assert all_zero["Has0_acc_2"] == 0.5
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        mosi_metrics([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        mosi_metrics([], [])


def test_sims_metrics_by_hand():
    pred = [-1.3, -0.1, 0.1, 0.05, 0.7, 0.9]
    label = [-0.8, -0.2, 0.1, 0.0, 0.8, 1.2]
    # after clipping to [-1, 1]: p = -1 -0.1 0.1 0.05 0.7 0.9 ; y = -0.8 -0.2 0.1 0 0.8 1
    got = sims_metrics(pred, label)
    expected = {
        # [-1, 0] -> 0, (0, 1] -> 1: p 0 0 1 1 1 1 ; y 0 0 1 0 1 1 -> 5/6
        "Mult_acc_2": 5 / 6,
        # [-1,-0.1] (-0.1,0.1] (0.1,1]: p 0 0 1 1 2 2 ; y 0 0 1 1 2 2 -> 6/6
        "Mult_acc_3": 1.0,
        # edges -0.7 -0.1 0.1 0.7: p 0 1 2 2 3 4 ; y 0 1 2 2 4 4 -> 5/6
        "Mult_acc_5": 5 / 6,
        # class 0 (3 true): TP 2, FP 0, FN 1 -> F1 0.8; class 1 (3 true): TP 3, FP 1 -> 6/7
        # weighted by truth counts (pred counts would give 0.838095)
        "F1_score": (3 * 0.8 + 3 * 6 / 7) / 6,
        # |errors| after clipping 0.2 0.1 0 0.05 0.1 0.1 -> 0.55 / 6
        "MAE": 0.55 / 6,
        # sum p*y 2.29, sum p 0.65, sum y 0.9, sum p^2 2.3225, sum y^2 2.33, n 6:
        # sum dp*dy = 2.29 - 0.65*0.9/6 = 2.1925
        # sum dp^2 = 2.3225 - 0.65^2/6, sum dy^2 = 2.33 - 0.81/6
        "Corr": 2.1925 / math.sqrt((2.3225 - 0.65**2 / 6) * (2.33 - 0.81 / 6)),
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key


def test_sims_thresholds_compare_in_input_precision():
    # MMSA compares float32 tensors with the edges, so float32(0.1) falls in (-0.1, 0.1];
    # in float64 it would be just above 0.1 and land in (0.1, 1].
    got = sims_metrics(torch.tensor([0.1, -0.1]), torch.tensor([0.05, -0.5]))
    assert got["Mult_acc_3"] == 1.0
    assert sims_metrics([0.3, 0.3], [0.2, -0.4])["Corr"] == 0.0
