"""Training windows cut by the engine itself from labelled transcripts spoken with espeak-ng.

Training and serving must see the same features. Each transcript is spoken (espeak-ng,
one fixed voice), played into a real `Session` as fast as possible (watermark clock,
as `stream-mmsa run --fast`), and every window its Aligner closes is kept with the
utterance's label: the text is what the streaming ASR recognised (errors and dropped
words included), the audio is the AcousticExtractor's. Token states of each window's
transcript come from the same frozen encoder afterwards, batched and cached, instead
of once per window inside the session.

What carries no sentiment here, and is stored so that the model learns it:
- audio: espeak-ng's prosody is the same whatever the label;
- vision: no labelled face video exists for MOSI/MOSEI, so each window gets the vision
  of a random window of the bundled sample (a real face through FaceExtractor, with its
  no-face stretch), unrelated to the label.

Cached under `<cache_root>/spoken/<key>/`, one file per utterance; reruns skip what is
there. `python -m stream_mmsa.train.spoken featurize --config configs/engine.yaml`
featurizes ahead of training; `... eval` reports window and utterance figures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import pickle
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config, EngineConfig, load_config
from ..engine import Runtime, Session
from ..extractors import transcript_config
from ..features.text import TextEncoder, encode_records
from ..media.frames import AUDIO_RATE
from ..media.sources.base import Source
from ..media.sources.file import FileSource
from ..media.sources.synthetic import SyntheticSource
from ..media.speech import speak
from ..model.sentiment import SentimentModel
from ..paths import SAMPLE, cache_root
from ..sinks.group import SinkGroup
from ..windowing import USED_STATES, Window
from .datasets import MultimodalDataset, Sample, TextRecord, load_label_csv, make_loader
from .evaluate import predict
from .loading import text_dataset
from .metrics import mosi_metrics

VOICE = ("-s", "150", "-g", "2", "-p", "50")
"""espeak-ng words/minute, word gap (10 ms units), pitch: one neutral voice for every label."""
LEAD, TAIL, NOISE, SEED = 0.5, 1.0, 0.002, 7
"""Silence before and after each utterance (s), room noise amplitude, its seed."""
VERSION = 1
"""Bump when what a stored window holds changes."""

Stored = list[dict]
"""One utterance: per window its index, start, end, states, transcript and audio array."""


class _Capture(Session):
    """A session that keeps each window as the engine cut it.

    Text states are left to `encode_records` (same encoder, batched and cached), so the
    session's own scores, which nobody reads here, are made without text.
    """

    def __init__(self, runtime: Runtime, source: Source, session_id: str) -> None:
        super().__init__(runtime, source, SinkGroup([]), session_id=session_id, realtime=False)
        self.windows: list[Window] = []

    async def _with_text(self, window: Window) -> Window:
        self.windows.append(window)
        return replace(window, features={**window.features, "text": None})


def _stored(window: Window) -> dict:
    audio = window.features["audio"]
    return {
        "index": window.index,
        "start": window.start,
        "end": window.end,
        "states": dict(window.states),
        "transcript": window.transcript,
        "audio": audio if window.states["audio"] in USED_STATES else None,
        "vision": window.features["vision"] if window.states["vision"] in USED_STATES else None,
    }


def utterance_audio(text: str) -> np.ndarray:
    """The transcript spoken in the fixed voice, between short silences with room noise."""
    speech = speak(text, VOICE)
    pad = np.zeros(round(LEAD * AUDIO_RATE), np.float32)
    audio = np.concatenate([pad, speech, np.zeros(round(TAIL * AUDIO_RATE), np.float32)])
    audio += np.random.default_rng(SEED).normal(0, NOISE, len(audio)).astype(np.float32)
    return np.clip(audio, -1, 1)


def cache_dir(engine: EngineConfig) -> Path:
    """Where this voice, window cadence and recogniser's windows are kept.

    The recogniser's settings are part of the key (as the offline session builds them):
    windows transcribed with other settings would train on words live sessions never hear.
    """
    recogniser = asdict(transcript_config(engine, realtime=False))
    settings = [VERSION, VOICE, LEAD, TAIL, NOISE, engine.window.model_dump(), recogniser]
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "spoken" / key


def _engine_config(engine: EngineConfig) -> EngineConfig:
    """Featurize with the text checkpoint (any works: only its encoder settings matter)."""
    from .run import DEFAULT_CHECKPOINT

    return engine.model_copy(update={"checkpoint": DEFAULT_CHECKPOINT})


async def _run(runtime: Runtime, source: Source, session_id: str) -> Stored:
    session = _Capture(runtime, source, session_id)
    summary = await session.run()
    if summary.error is not None:  # training data must not end early without a word
        raise summary.error
    return [_stored(w) for w in session.windows]


def _save(path: Path, windows: Stored) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(windows))
    tmp.replace(path)  # atomic: an interrupted run leaves no half-written utterance


def featurize(records: Sequence[TextRecord], engine: EngineConfig) -> Path:
    """Speak and window every record not cached yet; returns the cache directory."""
    directory = cache_dir(engine)
    directory.mkdir(parents=True, exist_ok=True)
    todo = [r for r in records if not (directory / f"{r.id}.pkl").is_file()]
    if not todo and (directory / "vision.pkl").is_file():
        return directory

    async def go() -> None:
        async with Runtime(_engine_config(engine)) as runtime:
            if not (directory / "vision.pkl").is_file():
                _save(directory / "vision.pkl", await _run(runtime, FileSource(SAMPLE, False), "v"))
            for record in tqdm(todo, desc="speaking transcripts", unit="utt"):
                audio = utterance_audio(record.text)
                source = SyntheticSource(
                    len(audio) / AUDIO_RATE, audio=audio, video=None, chunk_ms=40.0
                )
                _save(directory / f"{record.id}.pkl", await _run(runtime, source, record.id))

    asyncio.run(go())
    return directory


def select_rows(records: list[TextRecord], limit: int, seed: int) -> list[TextRecord]:
    """The first `limit` records (0: all) of a seeded shuffle, so a larger limit only adds
    rows and featurizing in this order can stop at any point."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    return shuffled[: limit or None]


def _load(path: Path) -> Stored:
    return pickle.loads(path.read_bytes())


def spoken_dataset(
    records: Sequence[TextRecord],
    encoder: TextEncoder,
    dims: dict[str, int],
    engine: EngineConfig,
    *,
    name: str,
    seed: int,
    stride: int = 1,
) -> MultimodalDataset:
    """One sample per window (id "<utterance>#<index>") with its utterance's label.

    stride keeps every stride-th window (they overlap by length - hop seconds). Windows
    where neither text nor audio is used carry nothing to learn from and are left out.
    """
    directory = featurize(records, engine)
    vision = [w["vision"] for w in _load(directory / "vision.pkl")]
    rng = np.random.default_rng(seed)
    kept: list[tuple[TextRecord, dict]] = []
    for record in records:
        for window in _load(directory / f"{record.id}.pkl"):
            if window["index"] % stride == stride - 1:
                kept.append((record, window))
    texts = sorted({w["transcript"] for _, w in kept if _has_text(w)})
    states = encode_records([TextRecord(t, t, 0.0) for t in texts], encoder)
    samples = []
    for record, window in kept:
        features = {}
        if _has_text(window):
            features["text"] = states[window["transcript"]].float().numpy()
        if window["audio"] is not None:
            features["audio"] = window["audio"]
        if not features:
            continue
        face = vision[rng.integers(len(vision))]
        if face is not None:
            features["vision"] = face
        samples.append(Sample(f"{record.id}#{window['index']}", record.label, features))
    return MultimodalDataset(samples, {**dims, "text": encoder.hidden_size}, name)


def _has_text(window: dict) -> bool:
    return window["states"]["text"] in USED_STATES and bool(window["transcript"])


def config_records(config: Config, split: str) -> list[list[TextRecord]]:
    """The records of each train path (split train, data.max_rows applied) or of valid_path."""
    data = config.data
    if split != "train":
        return [load_label_csv(data.valid_path or data.train_paths[0], split)]
    limits = data.max_rows or [0] * len(data.train_paths)
    return [
        select_rows(load_label_csv(path, split), limit, config.seed)
        for path, limit in zip(data.train_paths, limits, strict=True)
    ]


def spoken_splits(
    config: Config, encoder: TextEncoder
) -> tuple[MultimodalDataset, MultimodalDataset]:
    """(train, valid) for data.kind=spoken: train paths repeated as data.train_repeats says,
    plus data.text_paths' gold transcripts as text-only samples."""
    data, dims = config.data, dict(config.model.input_dims)
    per_path = config_records(config, "train")
    repeats = data.train_repeats or [1] * len(per_path)
    train_records = [r for records, n in zip(per_path, repeats, strict=True) for r in records * n]
    (valid_records,) = config_records(config, "valid")
    featurize(valid_records + [r for records in per_path for r in records], config.engine)
    names = "+".join(p.parent.name for p in data.train_paths)
    train = spoken_dataset(
        train_records,
        encoder,
        dims,
        config.engine,
        name=f"{names}:train (spoken)",
        seed=config.seed,
        stride=data.window_stride,
    )
    if data.text_paths:
        gold = text_dataset(data.text_paths, "train", encoder, dims)
        train = MultimodalDataset(
            train.samples + gold.samples, train.dims, f"{train.name}+{gold.name}"
        )
    valid = spoken_dataset(
        valid_records,
        encoder,
        dims,
        config.engine,
        name=f"{(data.valid_path or data.train_paths[0]).parent.name}:valid (spoken)",
        seed=config.seed + 1,
    )
    return train, valid


def window_and_utterance_metrics(
    model: SentimentModel, dataset: MultimodalDataset, imagine: str = "gate"
) -> dict[str, dict[str, float]]:
    """MOSI metrics per window, and per utterance on the mean score of its windows."""
    pred, label = predict(model, make_loader(dataset, 256), imagine=imagine)
    by_utterance: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(dataset.samples):
        by_utterance[sample.id.rsplit("#", 1)[0]].append(i)
    groups = list(by_utterance.values())
    utt_pred = torch.stack([pred[g].mean() for g in groups])
    utt_label = torch.stack([label[g[0]] for g in groups])
    return {
        "window": {**mosi_metrics(pred, label), "count": len(pred)},
        "utterance": {**mosi_metrics(utt_pred, utt_label), "count": len(groups)},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Featurize spoken transcripts, or evaluate.")
    parser.add_argument("action", choices=["featurize", "eval"])
    parser.add_argument("--config", type=Path, default=Path("configs/engine.yaml"))
    parser.add_argument("--checkpoint", type=Path, help="eval: defaults to the engine's")
    parser.add_argument(
        "--drop",
        nargs="*",
        default=[],
        choices=["audio", "vision"],
        help="eval: remove these modalities from every window (how much the model relies on them)",
    )
    parser.add_argument("--imagine", choices=["gate", "always", "never"], default="gate")
    parser.add_argument(
        "--against",
        nargs="+",
        metavar="SECTION.KEY=VALUE",
        help="eval: the same config with these overrides is the baseline (e.g. "
        "engine.window.text_context=0); prints the paired difference with bootstrap intervals",
    )
    parser.add_argument(
        "--against-checkpoint", type=Path, help="eval: the baseline's model (default: the same)"
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)
    torch.set_num_threads(config.train.threads)
    if args.action == "featurize":
        records = [r for rs in config_records(config, "train") for r in rs]
        print(featurize(config_records(config, "valid")[0] + records, config.engine))
        return
    from .run import load_for_eval

    model, _, encoder = load_for_eval(args.checkpoint or EngineConfig().checkpoint)
    dims = dict(model.fusion.config.input_dims)

    def valid_windows(config: Config) -> MultimodalDataset:
        (records,) = config_records(config, "valid")
        valid = spoken_dataset(
            records, encoder, dims, config.engine, name="valid", seed=config.seed + 1
        )
        for sample in valid.samples:
            for modality in args.drop:
                sample.features.pop(modality, None)
        return MultimodalDataset([s for s in valid.samples if s.features], valid.dims, valid.name)

    valid = valid_windows(config)
    print(json.dumps(window_and_utterance_metrics(model, valid, args.imagine), indent=2))
    if args.against or args.against_checkpoint:
        other = model
        if args.against_checkpoint:
            other, _, encoder = load_for_eval(args.against_checkpoint)
        baseline = valid_windows(load_config(args.config, args.against or []))
        difference = paired_difference((model, valid), (other, baseline), args.imagine)
        print(json.dumps(difference, indent=2))


def paired_difference(
    tried: tuple[SentimentModel, MultimodalDataset],
    baseline: tuple[SentimentModel, MultimodalDataset],
    imagine: str = "gate",
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """`tried` minus `baseline` (model and windows of the same utterances), with 95 %
    intervals from a bootstrap over utterances: windows of one utterance are not
    independent, and 229 valid clips are few, so a win has to clear its interval."""
    rng = np.random.default_rng(seed)
    sides = []
    for model, data in (tried, baseline):
        pred, label = predict(model, make_loader(data, 256), imagine=imagine)
        by_utterance: dict[str, list[int]] = defaultdict(list)
        for i, sample in enumerate(data.samples):
            by_utterance[sample.id.rsplit("#", 1)[0]].append(i)
        sides.append((pred.numpy(), label.numpy(), by_utterance))
    common = sorted(set(sides[0][2]) & set(sides[1][2]))

    def figures(picked: Sequence[str]) -> np.ndarray:
        out = []
        for pred, label, groups in sides:
            rows = np.concatenate([groups[u] for u in picked])
            nonzero = label[rows] != 0
            window_acc = np.mean((pred[rows] > 0)[nonzero] == (label[rows] > 0)[nonzero])
            utt = np.array([pred[groups[u]].mean() for u in picked])
            utt_label = np.array([label[groups[u][0]] for u in picked])
            keep = utt_label != 0
            out.append(
                [
                    window_acc,
                    np.abs(pred[rows] - label[rows]).mean(),
                    np.mean((utt > 0)[keep] == (utt_label > 0)[keep]),
                    np.abs(utt - utt_label).mean(),
                ]
            )
        return np.array(out[0]) - np.array(out[1])

    point = figures(common)
    draws = np.array(
        [figures(rng.choice(common, len(common))) for _ in tqdm(range(resamples), "bootstrap")]
    )
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    names = ["window Non0_acc_2", "window MAE", "utterance Non0_acc_2", "utterance MAE"]
    return {
        name: {"difference": float(p), "ci95_low": float(lo), "ci95_high": float(hi)}
        for name, p, lo, hi in zip(names, point, low, high, strict=True)
    } | {"utterances": {"count": float(len(common))}}


if __name__ == "__main__":
    main()
