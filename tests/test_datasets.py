import pickle

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from stream_mmsa.model.types import MODALITIES, MultimodalBatch
from stream_mmsa.train.datasets import (
    MultimodalDataset,
    Sample,
    TextRecord,
    collate,
    load_label_csv,
    load_mmsa_pickle,
    make_loader,
)

# Real lengths of the 6 tiny samples: train = 0..2, valid = 3..4, test = 5.
TEXT_LEN = [10, 7, 3, 5, 1, 8]
AUDIO_LEN = [12, 9, 0, 4, 12, 6]
VISION_LEN = [15, 2, 11, 15, 7, 1]
SPLITS = {"train": [0, 1, 2], "valid": [3, 4], "test": [5]}


def _mmsa_dict() -> dict:
    """Six samples in the MMSA processed-pickle schema, padding done the MMSA way."""
    rng = np.random.default_rng(0)
    n = 6
    text = rng.standard_normal((n, 10, 768)).astype(np.float32)  # BERT states: padding not zero
    text_bert = np.zeros((n, 3, 10), dtype=np.int64)
    audio = np.zeros((n, 12, 5), dtype=np.float32)
    vision = np.zeros((n, 15, 20), dtype=np.float32)
    for i in range(n):
        text_bert[i, 0, : TEXT_LEN[i]] = rng.integers(100, 30000, TEXT_LEN[i])
        text_bert[i, 1, : TEXT_LEN[i]] = 1
        audio[i, : AUDIO_LEN[i]] = rng.standard_normal((AUDIO_LEN[i], 5))
        vision[i, : VISION_LEN[i]] = rng.standard_normal((VISION_LEN[i], 20))
    audio[0, 3, 2] = -np.inf  # as in MMSA's COVAREP features
    audio[1, 0, 0] = np.nan
    labels = np.array([-3.0, -0.6, 0.0, 1.4, 2.2, 3.0], dtype=np.float32)
    data = {}
    for split, idx in SPLITS.items():
        data[split] = {
            "raw_text": [f"words of clip {i}" for i in idx],
            "text": text[idx],
            "text_bert": text_bert[idx],
            "audio": audio[idx],
            "vision": vision[idx],
            "audio_lengths": [AUDIO_LEN[i] for i in idx],
            "vision_lengths": np.array([VISION_LEN[i] for i in idx]),
            "id": np.array([f"vid{i}$_${i + 1}" for i in idx]),
            "regression_labels": labels[idx],
        }
    return data


def _write(tmp_path, data) -> str:
    path = tmp_path / "tiny.pkl"
    with path.open("wb") as f:
        pickle.dump(data, f)
    return str(path)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_load_mmsa_pickle_splits(tmp_path, split):
    data = _mmsa_dict()
    ds = load_mmsa_pickle(_write(tmp_path, data), split)
    idx = SPLITS[split]
    assert len(ds) == len(idx)
    assert ds.dims == {"text": 768, "audio": 5, "vision": 20}
    for sample, i in zip(ds, idx, strict=True):
        assert sample.id == f"vid{i}_{i + 1}"
        assert sample.text == f"words of clip {i}"
        assert sample.label == pytest.approx(float(data[split]["regression_labels"][idx.index(i)]))
        assert sample.features["text"].shape == (TEXT_LEN[i], 768)
        assert sample.features["vision"].shape == (VISION_LEN[i], 20)
        if AUDIO_LEN[i]:
            assert sample.features["audio"].shape == (AUDIO_LEN[i], 5)
        else:
            assert "audio" not in sample.features
        for x in sample.features.values():
            assert x.dtype == np.float32
            assert np.isfinite(x).all()


def test_load_mmsa_pickle_replaces_inf_and_nan(tmp_path):
    ds = load_mmsa_pickle(_write(tmp_path, _mmsa_dict()), "train")
    assert ds[0].features["audio"][3, 2] == 0.0
    assert ds[1].features["audio"][0, 0] == 0.0


def test_load_mmsa_pickle_batch_masks(tmp_path):
    ds = load_mmsa_pickle(_write(tmp_path, _mmsa_dict()), "train")
    batch = collate([ds[0], ds[1], ds[2]], ds.dims)
    assert batch.features["text"].shape == (3, 10, 768)
    assert batch.features["audio"].shape == (3, 12, 5)
    assert batch.features["vision"].shape == (3, 15, 20)
    assert batch.masks["text"].sum(1).tolist() == TEXT_LEN[:3]
    assert batch.masks["audio"].sum(1).tolist() == AUDIO_LEN[:3]
    assert batch.masks["vision"].sum(1).tolist() == VISION_LEN[:3]
    # sample 2 has no audio frames: missing, not an empty present modality
    assert batch.present.tolist() == [[True, True, True], [True, True, True], [True, False, True]]
    assert torch.isfinite(batch.features["audio"]).all()


def test_load_mmsa_pickle_without_optional_keys(tmp_path):
    data = _mmsa_dict()
    part = data["train"]
    for key in ("text_bert", "audio_lengths", "vision_lengths", "raw_text"):
        del part[key]
    for row, i in enumerate(SPLITS["train"]):
        part["text"][row, TEXT_LEN[i] :] = 0.0  # without a mask, padding must be zero rows
    ds = load_mmsa_pickle(_write(tmp_path, data), "train")
    for sample, i in zip(ds, SPLITS["train"], strict=True):
        assert len(sample.features["text"]) == TEXT_LEN[i]
        assert len(sample.features["audio"]) == 12  # no lengths: full padded length
        assert len(sample.features["vision"]) == 15
        assert sample.text is None


def test_load_mmsa_pickle_errors(tmp_path):
    data = _mmsa_dict()
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=r"tiny\.pkl.*no split 'dev'"):
        load_mmsa_pickle(path, "dev")
    del data["valid"]["regression_labels"]
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=r"tiny\.pkl \[valid\].*regression_labels"):
        load_mmsa_pickle(path, "valid")


def _sample(sid, label, **lengths):
    dims = {"text": 4, "audio": 3, "vision": 2}
    feats = {m: np.full((t, dims[m]), 1.0, dtype=np.float32) for m, t in lengths.items()}
    return Sample(sid, label, feats)


DIMS = {"text": 4, "audio": 3, "vision": 2}


def test_collate_pads_and_marks_absent_modalities():
    samples = [_sample("a", 1.5, text=3, audio=2), _sample("b", -2.0, text=5)]
    batch = collate(samples, DIMS)
    assert isinstance(batch, MultimodalBatch)
    assert batch.ids == ["a", "b"]
    assert batch.labels.dtype == torch.float32
    assert batch.labels.tolist() == [1.5, -2.0]
    assert batch.present.tolist() == [[True, True, False], [True, False, False]]
    assert batch.features["text"].shape == (2, 5, 4)
    assert batch.masks["text"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch.features["text"][0, 3:].abs().sum() == 0
    assert batch.features["audio"].shape == (2, 2, 3)
    assert not batch.masks["audio"][1].any()
    assert batch.features["audio"][1].abs().sum() == 0
    # nobody has vision: a (B, 1, D) zero placeholder with an all-False mask
    assert batch.features["vision"].shape == (2, 1, 2)
    assert batch.features["vision"].abs().sum() == 0
    assert not batch.masks["vision"].any()
    for m in MODALITIES:
        assert batch.masks[m].dtype == torch.bool


def test_collate_rejects_wrong_dims():
    bad = Sample("x", 0.0, {"text": np.zeros((3, 7), dtype=np.float32)})
    with pytest.raises(ValueError, match=r"'x'.*text"):
        collate([bad], DIMS)


def test_dataset_validates_dims_and_samples():
    with pytest.raises(ValueError, match="vision"):
        MultimodalDataset([], {"text": 4, "audio": 3}, name="t")
    with pytest.raises(ValueError, match="'x'"):
        MultimodalDataset([Sample("x", 0.0, {"audio": np.zeros((2, 5))})], DIMS, name="t")
    ds = MultimodalDataset([_sample("a", 0.0, text=1)], DIMS, name="toy")
    assert (len(ds), ds.name, ds.dims) == (1, "toy", DIMS)


def test_make_loader_is_seeded():
    samples = [_sample(f"s{i}", float(i % 7 - 3), text=1 + i % 4, vision=2) for i in range(20)]
    ds = MultimodalDataset(samples, DIMS, name="toy")

    def order(seed):
        return [sid for b in make_loader(ds, 6, shuffle=True, seed=seed) for sid in b.ids]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(order(3)) == sorted(s.id for s in samples)
    first = next(iter(make_loader(ds, 6)))
    assert first.ids == [f"s{i}" for i in range(6)]
    assert first.features["audio"].shape == (6, 1, 3)


CSV = """video_id,clip_id,text,label,mode,start,end
v1,1,"hello, world",2.4,train,0.0,1.0
v1,2,not good,-1.8,valid,1.0,2.0
v2,82_7,fine,0.0,train,0.0,1.0
"""


def test_load_label_csv(tmp_path):
    path = tmp_path / "label.csv"
    path.write_text(CSV, encoding="utf-8")
    train = load_label_csv(path, "train")
    assert train == [
        TextRecord("v1_1", "hello, world", 2.4, "v1", 1.0),
        TextRecord("v2_82_7", "fine", 0.0, "v2", 82.7),  # MOSEI: the clip id is its start
    ]
    assert load_label_csv(path, "valid") == [TextRecord("v1_2", "not good", -1.8, "v1", 2.0)]
    with pytest.raises(ValueError, match="withholds the test split"):
        load_label_csv(path, "test")


def test_clips_whose_ids_are_not_numbers_keep_the_file_order(tmp_path):
    path = tmp_path / "label.csv"
    path.write_text(
        "video_id,clip_id,text,label,mode\nv,b,one,0.5,train\nv,a,two,0.5,train\n",
        encoding="utf-8",
    )
    assert [(r.video, r.order) for r in load_label_csv(path, "train")] == [("v", 2.0), ("v", 3.0)]


def test_load_label_csv_errors(tmp_path):
    path = tmp_path / "label.csv"
    path.write_text("video_id,clip_id,text,mode\nv,1,hi,train\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"label\.csv.*missing columns \['label'\]"):
        load_label_csv(path, "train")
    path.write_text("video_id,clip_id,text,label,mode\nv,1,hi,abc,train\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"label\.csv:2"):
        load_label_csv(path, "train")


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "counts"), [("mosi", {"train": 1284, "valid": 229}), ("mosei", {"train": 16274})]
)
def test_shared_label_csv(name, counts):
    path = SHARED_DATA / name / "label.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    for split, n in counts.items():
        records = load_label_csv(path, split)
        assert len(records) == n
        assert len({r.id for r in records}) == n
        assert all(-3.0 <= r.label <= 3.0 and r.text for r in records)
    with pytest.raises(ValueError, match="withholds"):
        load_label_csv(path, "test")
