import numpy as np
import pytest
import torch

from stream_mmsa.model.types import MODALITIES, MultimodalBatch
from stream_mmsa.train.datasets import Sample, collate
from stream_mmsa.train.protocols import (
    PATTERNS,
    ElementMissing,
    MissingProtocol,
    ModalityPattern,
    RandomMissing,
    TemporalMissing,
    protocol_settings,
)

DIMS = {"text": 3, "audio": 2, "vision": 4}


def _batch(n=64, seed=0, max_len=30) -> MultimodalBatch:
    """n samples with lengths 1..max_len and non-zero features everywhere real."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        feats = {
            m: rng.uniform(0.5, 1.5, (rng.integers(1, max_len + 1), d)).astype(np.float32)
            for m, d in DIMS.items()
        }
        samples.append(Sample(f"s{i}", float(i % 7 - 3), feats))
    return collate(samples, DIMS)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _snapshot(batch):
    return (
        {m: x.clone() for m, x in batch.features.items()},
        {m: x.clone() for m, x in batch.masks.items()},
        batch.present.clone(),
        batch.labels.clone(),
        list(batch.ids),
    )


def _assert_same(batch, snap):
    feats, masks, present, labels, ids = snap
    for m in MODALITIES:
        assert torch.equal(batch.features[m], feats[m])
        assert torch.equal(batch.masks[m], masks[m])
    assert torch.equal(batch.present, present)
    assert torch.equal(batch.labels, labels)
    assert batch.ids == ids


def _assert_consistent(out):
    """Dropped/padded rows are zero, and present iff some real element remains."""
    for j, m in enumerate(MODALITIES):
        assert (out.features[m][~out.masks[m]] == 0).all()
        assert torch.equal(out.present[:, j], out.masks[m].any(dim=1))


def test_patterns_and_mplmm_codes():
    assert len(PATTERNS) == 7 and next(iter(PATTERNS)) == "complete"
    batch = _batch()
    snap = _snapshot(batch)
    for name, dropped in PATTERNS.items():
        out = ModalityPattern(name).apply(batch, _gen())
        assert out.batch_size == batch.batch_size
        for j, m in enumerate(MODALITIES):
            if m in dropped:
                assert not out.present[:, j].any()
                assert not out.masks[m].any()
                assert out.features[m].abs().sum() == 0
            else:
                assert torch.equal(out.masks[m], batch.masks[m])
                assert torch.equal(out.features[m], batch.features[m])
                assert torch.equal(out.present[:, j], batch.present[:, j])
        assert torch.equal(out.labels, batch.labels) and out.ids == batch.ids
    _assert_same(batch, snap)
    with pytest.raises(ValueError, match="missing_text"):
        ModalityPattern("missing_smell")


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.7])
def test_element_rate_is_roughly_right(rate):
    batch = _batch(n=200)
    snap = _snapshot(batch)
    out = ElementMissing(rate).apply(batch, _gen(1))
    _assert_consistent(out)
    real = sum(int(batch.masks[m].sum()) for m in MODALITIES)
    kept = sum(int(out.masks[m].sum()) for m in MODALITIES)
    assert 1 - kept / real == pytest.approx(rate, abs=0.02)  # ~9000 real elements
    for m in MODALITIES:  # only real elements can be dropped; kept ones are untouched
        assert not (out.masks[m] & ~batch.masks[m]).any()
        assert torch.equal(out.features[m][out.masks[m]], batch.features[m][out.masks[m]])
    _assert_same(batch, snap)


def test_element_full_drop_marks_missing():
    batch = _batch(n=8)
    out = ElementMissing(1.0).apply(batch, _gen())
    assert not out.present.any()
    _assert_consistent(out)
    # a one-element modality dropped by chance is missing too
    short = collate([Sample("a", 0.0, {"text": np.ones((1, 3), np.float32)})] * 50, DIMS)
    out = ElementMissing(0.5).apply(short, _gen(3))
    assert torch.equal(out.present[:, 0], out.masks["text"][:, 0])
    assert 0 < int(out.present[:, 0].sum()) < 50


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_temporal_drops_one_contiguous_stretch(fraction):
    batch = _batch(n=100)
    snap = _snapshot(batch)
    out = TemporalMissing(fraction).apply(batch, _gen(2))
    _assert_consistent(out)
    starts = []
    for m in MODALITIES:
        for i in range(batch.batch_size):
            real = batch.masks[m][i]
            length = int(real.sum())
            dropped = (real & ~out.masks[m][i]).nonzero().flatten().tolist()
            expected = max(1, int(np.floor(fraction * length + 0.5)))
            assert len(dropped) == min(expected, length)
            assert dropped == list(range(dropped[0], dropped[0] + len(dropped)))
            starts.append(dropped[0] / max(length - len(dropped), 1))
    assert 0.35 < float(np.mean(starts)) < 0.65  # positions spread over the sequence
    _assert_same(batch, snap)


def test_temporal_follows_real_elements_after_element_drops():
    batch = ElementMissing(0.5).apply(_batch(n=30), _gen(5))
    out = TemporalMissing(0.5).apply(batch, _gen(6))
    for m in MODALITIES:
        lengths = batch.masks[m].sum(1)
        lost = lengths - out.masks[m].sum(1)
        expected = torch.where(lengths > 0, torch.floor(0.5 * lengths + 0.5).clamp(min=1), 0)
        assert torch.equal(lost, expected.long())


def test_random_missing_distribution():
    batch = _batch(n=1, max_len=4)
    big = collate(
        [
            Sample(f"s{i}", 0.0, {m: np.ones((4, d), np.float32) for m, d in DIMS.items()})
            for i in range(4200)
        ],
        DIMS,
    )
    out = RandomMissing(drop_rate=0.7).apply(big, _gen(4))
    rows = [tuple(r) for r in out.present.tolist()]
    complete = rows.count((True, True, True)) / len(rows)
    assert complete == pytest.approx(0.3, abs=0.03)
    for dropped in list(PATTERNS.values())[1:]:
        row = tuple(m not in dropped for m in MODALITIES)
        assert rows.count(row) / len(rows) == pytest.approx(0.7 / 6, abs=0.02)
    _assert_consistent(out)
    assert RandomMissing(drop_rate=0.0).apply(batch, _gen()).present.all()


def test_random_missing_keeps_some_modality_and_adds_noise():
    # samples that only have text can't lose it: every pattern would leave nothing
    only_text = collate([Sample("t", 0.0, {"text": np.ones((5, 3), np.float32)})] * 100, DIMS)
    out = RandomMissing(drop_rate=1.0).apply(only_text, _gen())
    assert out.present[:, 0].all()
    batch = _batch(n=200)
    noisy = RandomMissing(drop_rate=0.0, element_noise=0.6).apply(batch, _gen(7))
    _assert_consistent(noisy)
    real = sum(int(batch.masks[m].sum()) for m in MODALITIES)
    kept = sum(int(noisy.masks[m].sum()) for m in MODALITIES)
    assert 1 - kept / real == pytest.approx(0.3, abs=0.05)  # per-sample rate ~ U(0, 0.6)


@pytest.mark.parametrize(
    "protocol",
    [ElementMissing(0.4), TemporalMissing(0.3), RandomMissing(0.7, element_noise=0.5)],
    ids=lambda p: p.name,
)
def test_deterministic_and_not_mutating(protocol):
    batch = _batch()
    snap = _snapshot(batch)
    a = protocol.apply(batch, _gen(11))
    b = protocol.apply(batch, _gen(11))
    c = protocol.apply(batch, _gen(12))
    for m in MODALITIES:
        assert torch.equal(a.masks[m], b.masks[m])
        assert torch.equal(a.features[m], b.features[m])
    assert torch.equal(a.present, b.present)
    assert any(not torch.equal(a.masks[m], c.masks[m]) for m in MODALITIES)
    _assert_same(batch, snap)
    a.labels += 1  # outputs own their tensors
    _assert_same(batch, snap)


def test_protocol_settings():
    modality = protocol_settings("modality")
    element = protocol_settings("element")
    temporal = protocol_settings("temporal")
    assert [p.name for p in modality] == list(PATTERNS)
    assert [p.name for p in element] == [f"element_{r / 10}" for r in range(10)]
    assert [p.name for p in temporal] == [f"temporal_{f}" for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
    everything = protocol_settings("all")
    assert [p.name for p in everything] == [p.name for p in modality + element + temporal]
    assert all(isinstance(p, MissingProtocol) for p in everything)
    assert isinstance(RandomMissing(), MissingProtocol)
    with pytest.raises(ValueError, match=r"modality.*element.*temporal.*all"):
        protocol_settings("spatial")
    with pytest.raises(ValueError):
        ElementMissing(1.5)
