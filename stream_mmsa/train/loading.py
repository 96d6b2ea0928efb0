"""Turn a config or a path into datasets, whatever the data's form.

label.csv transcripts go through the text encoder's frozen bottom (cached on
disk); MMSA pickles and the synthetic benchmark already hold features.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, TextConfig
from ..features.text import TextEncoder, encode_records
from .datasets import MultimodalDataset, Sample, load_label_csv, load_mmsa_pickle
from .synthetic import make_synthetic


def make_text_encoder(text: TextConfig) -> TextEncoder:
    return TextEncoder(
        text.model_path,
        trainable_top_layers=text.trainable_top_layers,
        max_tokens=text.max_tokens,
    )


def text_dataset(
    paths: list[Path],
    split: str,
    encoder: TextEncoder,
    dims: dict[str, int],
    repeats: list[int] | None = None,
) -> MultimodalDataset:
    """Rows of `split` from each label.csv, as text-only samples of frozen-bottom states.

    `repeats` oversamples a path (MOSI is 13x smaller than MOSEI but is the target domain).
    """
    per_path = [load_label_csv(path, split) for path in paths]
    states = encode_records([r for records in per_path for r in records], encoder)
    samples = []
    for records, times in zip(per_path, repeats or [1] * len(paths), strict=True):
        samples += [
            Sample(r.id, r.label, {"text": states[r.id].float().numpy()}, text=r.text)
            for r in records
        ] * times
    name = "+".join(p.parent.name for p in paths) + f":{split}"
    return MultimodalDataset(samples, {**dims, "text": encoder.hidden_size}, name)


def is_pickle(path: Path) -> bool:
    return path.suffix in (".pkl", ".pickle")


def load_split(
    path: Path, split: str, encoder: TextEncoder | None, dims: dict[str, int]
) -> MultimodalDataset:
    """One split of a label.csv (needs the text encoder) or of an MMSA pickle."""
    if is_pickle(path):
        return load_mmsa_pickle(path, split)
    if encoder is None:
        raise ValueError(f"{path} holds transcripts: a text encoder is needed to read it")
    return text_dataset([path], split, encoder, dims)


def datasets_from_config(
    config: Config,
) -> tuple[MultimodalDataset, MultimodalDataset, TextEncoder | None]:
    """(train, valid, text encoder or None) as the config's `data` section describes."""
    data = config.data
    dims = dict(config.model.input_dims)
    if data.kind == "synthetic":
        splits = make_synthetic(*data.synthetic_sizes, seed=config.seed)
        return splits["train"], splits["valid"], None
    if data.kind == "mmsa_pickle":
        path = data.train_paths[0]
        valid_path = data.valid_path or path
        return load_mmsa_pickle(path, "train"), load_mmsa_pickle(valid_path, "valid"), None
    encoder = make_text_encoder(config.text)
    if data.kind == "spoken":
        from .spoken import spoken_splits  # imports the engine, which imports this module

        return (*spoken_splits(config, encoder), encoder)
    train = text_dataset(data.train_paths, "train", encoder, dims, data.train_repeats)
    valid_path = data.valid_path or data.train_paths[0]
    valid = text_dataset([valid_path], "valid", encoder, dims)
    return train, valid, encoder
