from collections import Counter

import numpy as np
import pytest

from stream_mmsa.model.types import MODALITIES
from stream_mmsa.train.datasets import collate
from stream_mmsa.train.synthetic import (
    DIMS,
    MAX_LEN,
    MIN_LEN,
    REGIMES,
    make_synthetic,
    regime_of,
)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=1500, n_valid=50, n_test=1000, seed=7)


@pytest.fixture(scope="module")
def pooled(data):
    """Mean-pooled features per (split, modality), labels and regimes per split."""
    out = {}
    for split in ("train", "test"):
        ds = data[split]
        for m in MODALITIES:
            out[split, m] = np.stack([s.features[m].mean(axis=0) for s in ds])
        out[split, "label"] = np.array([s.label for s in ds])
        out[split, "regime"] = np.array([regime_of(s.id) for s in ds])
    return out


def _lstsq(x_train, target, x_eval):
    """Least squares with an intercept: fit on train, predict on eval."""
    w, *_ = np.linalg.lstsq(np.c_[x_train, np.ones(len(x_train))], target, rcond=None)
    return np.c_[x_eval, np.ones(len(x_eval))] @ w


def test_shapes_and_ranges(data):
    assert {k: len(v) for k, v in data.items()} == {"train": 1500, "valid": 50, "test": 1000}
    for ds in data.values():
        assert ds.dims == DIMS
        for s in ds:
            assert -3.0 <= s.label <= 3.0
            assert s.text is None
            assert set(s.features) == set(MODALITIES)
            for m, x in s.features.items():
                assert x.dtype == np.float32
                assert x.shape[1] == DIMS[m]
                assert MIN_LEN <= len(x) <= MAX_LEN
    lengths = {len(s.features["audio"]) for s in data["train"]}
    assert min(lengths) == MIN_LEN and max(lengths) == MAX_LEN
    batch = collate(list(data["valid"])[:4], data["valid"].dims)
    assert batch.present.all()


def test_deterministic_per_seed():
    a = make_synthetic(20, 5, 5, seed=1)
    b = make_synthetic(20, 5, 5, seed=1)
    c = make_synthetic(20, 5, 5, seed=2)
    for split in a:
        for x, y in zip(a[split], b[split], strict=True):
            assert x.id == y.id and x.label == y.label
            for m in MODALITIES:
                np.testing.assert_array_equal(x.features[m], y.features[m])
    assert [s.label for s in a["train"]] != [s.label for s in c["train"]]
    # a split does not depend on the size of the others
    d = make_synthetic(40, 5, 9, seed=1)
    np.testing.assert_array_equal(d["valid"][0].features["text"], a["valid"][0].features["text"])


def test_regimes(pooled):
    counts = Counter(pooled["train", "regime"])
    assert counts.keys() == {"congruent", "sarcastic", "masked"}
    assert counts["congruent"] / 1500 == pytest.approx(0.7, abs=0.05)
    assert counts["sarcastic"] / 1500 == pytest.approx(0.1, abs=0.03)
    assert counts["masked"] / 1500 == pytest.approx(0.2, abs=0.04)
    with pytest.raises(ValueError):
        regime_of("vid1_3")


def test_linear_probe_orders_signal_strength(pooled):
    r2 = {}
    y = pooled["test", "label"]
    for m in MODALITIES:
        pred = _lstsq(pooled["train", m], pooled["train", "label"], pooled["test", m])
        r2[m] = 1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)
    # seed 7 gives 0.58, 0.32, 0.11
    assert r2["text"] > r2["audio"] + 0.1
    assert r2["audio"] > r2["vision"] + 0.1
    assert r2["vision"] > 0.05


def _agreement(pooled, sources, target):
    """Per regime: corr of a label probe applied to the imagined and to the real target modality.

    The target is imagined from the sources by least squares fitted on all of train, i.e.
    with the population cross-modal mapping.
    """
    x_train, x_test = (
        np.hstack([pooled[split, m] for m in sources]) for split in ("train", "test")
    )
    imagined = _lstsq(x_train, pooled["train", target], x_test)
    real = pooled["test", target]
    probe = _lstsq(pooled["train", target], pooled["train", "label"], np.vstack([imagined, real]))
    fake, true = probe[: len(real)], probe[len(real) :]
    regimes = pooled["test", "regime"]
    return {r: np.corrcoef(fake[regimes == r], true[regimes == r])[0, 1] for r in REGIMES}


def test_cross_modal_predictability_depends_on_regime(pooled):
    """Imagined sentiment agrees, flips or is unrelated by regime, as the docstring table says."""
    for sources, target in [(["audio", "vision"], "text"), (["text"], "audio")]:
        agree = _agreement(pooled, sources, target)
        assert agree["congruent"] > 0.5, (target, agree)
        assert agree["sarcastic"] < -0.4, (target, agree)
        assert abs(agree["masked"]) < 0.3, (target, agree)
    # audio -> vision never flips (vision is weak, so agreement is low but positive)
    assert min(_agreement(pooled, ["audio"], "vision").values()) > 0.0


def test_regime_is_readable_best_from_audio(pooled):
    """The regime is a threshold on the style latent, which audio carries most and text least."""
    code = {"masked": -1.0, "congruent": 0.0, "sarcastic": 1.0}
    target = np.array([code[r] for r in pooled["train", "regime"]])
    truth = np.array([code[r] for r in pooled["test", "regime"]])
    corr = {}
    for m in MODALITIES:
        score = _lstsq(pooled["train", m], target, pooled["test", m])
        corr[m] = np.corrcoef(score, truth)[0, 1]
    # seed 7 gives audio 0.76, vision 0.67, text 0.58
    assert corr["audio"] > corr["vision"] > corr["text"] > 0.3
    assert corr["audio"] > corr["text"] + 0.1
