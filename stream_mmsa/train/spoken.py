"""Training windows cut by the engine itself from labelled transcripts spoken with espeak-ng.

Training and serving must see the same features. Each transcript is spoken (espeak-ng,
a voice drawn per utterance from its id: variant, rate, pitch, level, room noise and,
for half, sox reverb; `voice_for`), played into a real `Session` as fast as possible
(watermark clock, as `stream-mmsa run --fast`), and every window its Aligner closes is
kept with the utterance's label: the text is what the streaming ASR recognised (errors
and dropped words included), the audio is the AcousticExtractor's. Token states of each
window's transcript come from the same frozen encoder afterwards, batched and cached,
instead of once per window inside the session. For training, a share of windows
(data.late_text) carries the text of a window 1 to data.late_hops hops earlier, as a
lagging recogniser would give it live (`lagging`).

What carries no sentiment here, and is stored so that the model learns it:
- audio: espeak-ng's prosody is the same whatever the label (voices vary by utterance
  id, never by label);
- vision: no labelled face video exists for MOSI/MOSEI, so each window gets the vision
  of a random window of the bundled sample (a real face through FaceExtractor, with its
  no-face stretch), unrelated to the label.

Cached under `<cache_root>/spoken/<key>/`, one file per utterance; reruns skip what is
there. `python -m stream_mmsa.train.spoken featurize --config configs/engine.yaml`
featurizes ahead of training; `... eval` reports window and utterance figures (`--voice
fixed`: valid in the old single voice; `--readme`: README's spoken-mosi table).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import pickle
import random
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.signal import lfilter
from tqdm.auto import tqdm

from ..bench.speech import wer
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
from .readme import publish

VOICE = ("-s", "150", "-g", "2", "-p", "50")
"""The old fixed voice (words/minute, word gap in 10 ms units, pitch), kept to compare with
figures measured before the voices varied (`spoken eval --voice fixed`)."""
VARIANTS = ("", "+m1", "+m3", "+m7", "+f2", "+f3", "+f4")
"""espeak-ng en-us and some of its variants (`espeak-ng --voices=variant`), male and female."""
SPEEDS, GAPS, PITCHES, GAINS = (140, 175), (0, 3), (35, 65), (0.25, 0.7)
"""Ranges a varied voice is drawn from: words/minute, word gap, pitch, peak level."""
NOISES, REVERB, REVERBERANCE = (0.0005, 0.006), 0.5, (15, 60)
"""Room noise amplitude range; share of utterances with sox reverb, and its reverberance (%)."""
LEAD, TAIL, NOISE, SEED = 0.5, 1.0, 0.002, 7
"""Silence before and after each utterance (s), the fixed voice's noise amplitude, the seed."""
VERSION = 3
"""Bump when what a stored window holds changes (2: voices drawn per utterance; 3: the
recogniser keeps the whole words before a loop its token budget ran out in)."""


@dataclass(frozen=True)
class Voice:
    """How one utterance is spoken: espeak-ng flags, peak level, room noise, reverb (0: none)."""

    flags: tuple[str, ...] = VOICE
    gain: float = 0.5
    noise: float = NOISE
    reverb: int = 0


def voice_for(key: str, voices: str = "varied") -> Voice:
    """The voice an utterance is spoken in, drawn from its id (same id, same voice, any run).

    One fixed voice teaches the model one speaker's prosody and one recogniser error
    pattern; live speakers vary in timbre, rate, level and room. Each utterance gets one
    draw (no extra featurization); voices="fixed" is the old single voice.
    """
    if voices == "fixed":
        return Voice()
    rng = random.Random(f"{SEED}:{key}")  # str seeds hash with sha512: stable across runs
    variant, speed, gap = rng.choice(VARIANTS), rng.randint(*SPEEDS), rng.randint(*GAPS)
    pitch = rng.randint(*PITCHES)
    flags = ("-v", f"en-us{variant}", "-s", str(speed), "-g", str(gap), "-p", str(pitch))
    reverb = rng.randint(*REVERBERANCE) if rng.random() < REVERB else 0
    return Voice(flags, rng.uniform(*GAINS), rng.uniform(*NOISES), reverb)


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


def utterance_audio(text: str, voice: Voice = Voice()) -> np.ndarray:
    """The transcript spoken in `voice`, between short silences with room noise.

    The noise is low-passed (a room's hum and rumble, not hiss) and seeded by the text, so
    the same utterance and voice always give the same samples.
    """
    speech = speak(text, voice.flags)
    if voice.reverb and len(speech):
        speech = reverberate(speech, voice.reverb)
    speech *= voice.gain / max(float(np.abs(speech).max(initial=0.0)), 1e-6)
    pad = np.zeros(round(LEAD * AUDIO_RATE), np.float32)
    audio = np.concatenate([pad, speech, np.zeros(round(TAIL * AUDIO_RATE), np.float32)])
    seed = SEED if voice == Voice() else [SEED, *hashlib.sha1(text.encode()).digest()[:4]]
    noise = np.random.default_rng(seed).normal(0, voice.noise, len(audio))
    if voice != Voice():  # the fixed voice keeps its white noise (comparable with old figures)
        noise = lfilter([0.3], [1, -0.7], noise) / 0.42  # one-pole low-pass, same RMS
    return np.clip(audio + noise.astype(np.float32), -1, 1)


def reverberate(audio: np.ndarray, reverberance: int) -> np.ndarray:
    """`audio` through sox's reverb (a small room), tail included; needs sox on PATH."""
    sox = shutil.which("sox")
    if sox is None:
        raise RuntimeError(
            "spoken training speech uses sox for reverb, and sox is not on PATH: "
            "install it (apt-get install sox), or featurize with --voice fixed"
        )
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(AUDIO_RATE)]
    out = subprocess.run(
        [sox, *raw, "-", *raw, "-", "reverb", str(reverberance), "50", "40"],
        input=audio.astype(np.float32).tobytes(),
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, np.float32).copy()


def cache_dir(engine: EngineConfig, voices: str = "varied") -> Path:
    """Where these voices', window cadence's and recogniser's windows are kept.

    The recogniser's settings are part of the key (as the offline session builds them):
    windows transcribed with other settings would train on words live sessions never hear.
    """
    recogniser = asdict(transcript_config(engine, realtime=False))
    if recogniser["beam_size"] == 1:  # greedy, as before the field existed: caches stay valid
        del recogniser["beam_size"]
    speech = [VOICE, LEAD, TAIL, NOISE, SEED]
    if voices != "fixed":
        speech += [voices, VARIANTS, SPEEDS, GAPS, PITCHES, GAINS, NOISES, REVERB, REVERBERANCE]
    window = engine.window.model_dump(exclude=set(engine.window.LIVE_ONLY))
    settings = [VERSION, *speech, window, recogniser]
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


def featurize(records: Sequence[TextRecord], engine: EngineConfig, voices: str = "varied") -> Path:
    """Speak (voices: "varied" per utterance, or "fixed") and window every record not
    cached yet; returns the cache directory."""
    directory = cache_dir(engine, voices)
    directory.mkdir(parents=True, exist_ok=True)
    todo = [r for r in records if not (directory / f"{r.id}.pkl").is_file()]
    if not todo and (directory / "vision.pkl").is_file():
        return directory

    async def go() -> None:
        async with Runtime(_engine_config(engine)) as runtime:
            if not (directory / "vision.pkl").is_file():
                _save(directory / "vision.pkl", await _run(runtime, FileSource(SAMPLE, False), "v"))
            for record in tqdm(todo, desc="speaking transcripts", unit="utt"):
                audio = utterance_audio(record.text, voice_for(record.id, voices))
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


LATE_HOPS, LATE_SEED = 3, 3
"""At most how many windows (hops of 0.5 s) late text lags in evaluation ("text late");
the seed of who lags and by how much."""


def spoken_dataset(
    records: Sequence[TextRecord],
    encoder: TextEncoder,
    dims: dict[str, int],
    engine: EngineConfig,
    *,
    name: str,
    seed: int,
    stride: int = 1,
    late: float = 0.0,
    late_hops: int = LATE_HOPS,
    voices: str = "varied",
) -> MultimodalDataset:
    """One sample per window (id "<utterance>#<index>") with its utterance's label.

    stride keeps every stride-th window (they overlap by length - hop seconds). Windows
    where neither text nor audio is used carry nothing to learn from and are left out.
    late: the share of windows whose text lags (see `lagging`); 1.0 makes every window's
    text late (the "text late" evaluation), 0 keeps the text as recognised; late_hops is
    the largest lag.
    """
    directory = featurize(records, engine, voices)
    vision = [w["vision"] for w in _load(directory / "vision.pkl")]
    rng, lag_rng = np.random.default_rng(seed), np.random.default_rng([seed, LATE_SEED])
    kept: list[tuple[TextRecord, dict, dict | None]] = []
    for record in records:
        windows = _load(directory / f"{record.id}.pkl")
        for window in windows:
            if window["index"] % stride == stride - 1:
                kept.append((record, window, lagging(window, windows, late, lag_rng, late_hops)))
    texts = sorted({t["transcript"] for _, _, t in kept if t is not None and _has_text(t)})
    states = encode_records([TextRecord(t, t, 0.0) for t in texts], encoder)
    samples = []
    for record, window, text in kept:
        features = {}
        if text is not None and _has_text(text):
            features["text"] = states[text["transcript"]].float().numpy()
        if window["audio"] is not None:
            features["audio"] = window["audio"]
        if not features:
            continue
        face = vision[rng.integers(len(vision))]
        if face is not None:
            features["vision"] = face
        words = text["transcript"] if "text" in features else None
        samples.append(Sample(f"{record.id}#{window['index']}", record.label, features, words))
    return MultimodalDataset(samples, {**dims, "text": encoder.hidden_size}, name)


def lagging(
    window: dict, windows: Stored, late: float, rng: np.random.Generator, hops: int = LATE_HOPS
) -> dict | None:
    """The window whose text `window` carries: itself, or with probability `late` one
    1 to `hops` hops earlier in the same utterance (None: no earlier window, no words yet).

    Windows were cut as fast as possible, so the recogniser was never behind; live, it
    lags 0.5-3 s and a window's words are those of an earlier moment (the utterance's
    text so far, missing its latest words). Training on some such windows teaches the
    model what live text looks like; the draws are seeded, so a dataset is reproducible.
    """
    if late <= 0 or rng.random() >= late:
        return window
    back = window["index"] - 1 - int(rng.integers(0, hops))
    return next((w for w in windows if w["index"] == back), None)


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
    plus data.text_paths' gold transcripts as text-only samples (as data.text_repeats says)."""
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
        late=data.late_text,
        late_hops=data.late_hops,
    )
    if data.text_paths:
        gold = text_dataset(data.text_paths, "train", encoder, dims, data.text_repeats or None)
        train = MultimodalDataset(
            train.samples + gold.samples, train.dims, f"{train.name}+{gold.name}"
        )
    return train, valid_split(config, encoder, dims)


def valid_split(
    config: Config,
    encoder: TextEncoder,
    dims: dict[str, int],
    *,
    late: float = 0.0,
    voices: str = "varied",
) -> MultimodalDataset:
    """The spoken validation windows training selects on (`spoken_dataset`, seed + 1)."""
    (records,) = config_records(config, "valid")
    path = config.data.valid_path or config.data.train_paths[0]
    return spoken_dataset(
        records,
        encoder,
        dims,
        config.engine,
        name=f"{path.parent.name}:valid (spoken)",
        seed=config.seed + 1,
        late=late,
        voices=voices,
    )


def utterances(samples: Sequence[Sample]) -> dict[str, list[int]]:
    """The positions of each utterance's windows (ids "<utterance>#<window>")."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        groups[sample.id.rsplit("#", 1)[0]].append(i)
    return groups


def window_and_utterance_metrics(
    model: SentimentModel, dataset: MultimodalDataset, imagine: str = "gate"
) -> dict[str, dict[str, float]]:
    """MOSI metrics per window, and per utterance on the mean score of its windows."""
    pred, label = predict(model, make_loader(dataset, 256), imagine=imagine)
    return level_metrics(pred, label, dataset.samples)


def level_metrics(
    pred: torch.Tensor, label: torch.Tensor, samples: Sequence[Sample]
) -> dict[str, dict[str, float]]:
    """`window_and_utterance_metrics` of predictions already made."""
    return grouped_metrics(pred, label, utterances(samples))


def grouped_metrics(
    pred: torch.Tensor, label: torch.Tensor, by_utterance: dict[str, list[int]]
) -> dict[str, dict[str, float]]:
    """MOSI metrics per window, and per utterance on the mean of its windows' scores."""
    groups = list(by_utterance.values())
    utt_pred = torch.stack([pred[g].mean() for g in groups])
    utt_label = torch.stack([label[g[0]] for g in groups])
    return {
        "window": {**mosi_metrics(pred, label), "count": len(pred)},
        "utterance": {**mosi_metrics(utt_pred, utt_label), "count": len(groups)},
    }


WORD_BINS = ((0, 0), (1, 2), (3, 5), (6, 10), (11, 10**6))
"""Words in a window's text, or in an utterance's gold transcript, for `breakdown`."""


def breakdown(
    pred: np.ndarray, label: np.ndarray, samples: Sequence[Sample], gold: dict[str, str]
) -> list[str]:
    """Where the errors are: accuracy and MAE per window by the words its text holds, and
    per utterance (mean of its windows) by its gold transcript's length and by how well it
    was recognised (the word error rate of its fullest recognised text)."""

    def row(kind: str, picked: np.ndarray, p: np.ndarray, y: np.ndarray) -> str:
        nonzero = picked & (y != 0)
        acc = 100 * np.mean((p[nonzero] > 0) == (y[nonzero] > 0)) if nonzero.any() else np.nan
        mae = np.abs(p[picked] - y[picked]).mean() if picked.any() else np.nan
        return f"| {kind} | {int(picked.sum())} | {acc:.1f} | {mae:.3f} |"

    def words_span(low: int, high: int) -> str:
        return f"{low}+" if high >= 10**6 else f"{low}" if low == high else f"{low}-{high}"

    lines = ["| valid split, spoken | count | Non0_acc_2 | MAE |", "|---|---|---|---|"]
    words = np.array([len((s.text or "").split()) for s in samples])
    for low, high in WORD_BINS:
        picked = (words >= low) & (words <= high)
        lines.append(row(f"windows, {words_span(low, high)} words", picked, pred, label))
    groups = utterances(samples)
    utt_pred = np.array([pred[g].mean() for g in groups.values()])
    utt_label = np.array([label[g[0]] for g in groups.values()])
    length = np.array([len(gold[u].split()) for u in groups])
    for low, high in ((0, 10), (11, 10**6)):
        picked = (length >= low) & (length <= high)
        lines.append(row(f"utterances, {words_span(low, high)} words", picked, utt_pred, utt_label))
    heard = fullest_text(samples)
    error = np.array([wer(gold[u], heard.get(u, "")) for u in groups])
    for name, picked in (("WER ≤ 20 %", error <= 0.2), ("WER > 20 %", error > 0.2)):
        lines.append(row(f"utterances recognised with {name}", picked, utt_pred, utt_label))
    return lines


def fullest_text(samples: Sequence[Sample]) -> dict[str, str]:
    """Each utterance's longest window text: the most of it the engine recognised."""
    heard: dict[str, str] = {}
    for sample in samples:
        utterance = sample.id.rsplit("#", 1)[0]
        if len(sample.text or "") > len(heard.get(utterance, "")):
            heard[utterance] = sample.text or ""
    return heard


def recogniser_cost(
    model: SentimentModel,
    encoder: TextEncoder,
    records: Sequence[TextRecord],
    samples: Sequence[Sample],
) -> list[str]:
    """What recognition alone costs: the same model on text only, scoring each utterance's
    gold transcript and the fullest text the engine recognised for it (its longest window
    text), with the word error rate of the latter. Partial windows play no part here."""
    heard = fullest_text(samples)
    kept = [r for r in records if r.id in heard]
    lines = [
        "| valid split, one score per utterance, text only | Non0_acc_2 | MAE | WER |",
        "|---|---|---|---|",
    ]
    versions = {
        "gold transcript": [r.text for r in kept],
        "recognised": [heard[r.id] for r in kept],
    }
    for name, texts in versions.items():
        as_records = [replace(r, text=t) for r, t in zip(kept, texts, strict=True)]
        states = encode_records(as_records, encoder)
        dataset = MultimodalDataset(
            [Sample(r.id, r.label, {"text": states[r.id].float().numpy()}) for r in as_records],
            {**dict(model.fusion.config.input_dims), "text": encoder.hidden_size},
            name,
        )
        m = mosi_metrics(*predict(model, make_loader(dataset, 256)))
        error = 100 * np.mean([wer(r.text, t) for r, t in zip(kept, texts, strict=True)])
        lines.append(f"| {name} | {100 * m['Non0_acc_2']:.1f} | {m['MAE']:.3f} | {error:.1f} % |")
    return lines


CONDITIONS = {"full model": ([], 0.0), "vision missing": (["vision"], 0.0)}
CONDITIONS |= {"audio missing": (["audio"], 0.0), "text late": ([], 1.0)}
"""--readme's rows: modalities removed from every window, share of windows with late text."""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Featurize spoken transcripts, or evaluate.")
    parser.add_argument("action", choices=["featurize", "eval"])
    parser.add_argument("--config", type=Path, default=Path("configs/engine.yaml"))
    parser.add_argument("--checkpoint", type=Path, help="eval: defaults to the engine's")
    parser.add_argument(
        "--voice",
        choices=["varied", "fixed"],
        default="varied",
        help="valid speech: a voice drawn per utterance (as training), or the old fixed "
        "voice (figures comparable with those measured before voices varied)",
    )
    parser.add_argument(
        "--drop",
        nargs="*",
        default=[],
        choices=["audio", "vision"],
        help="eval: remove these modalities from every window (how much the model relies on them)",
    )
    parser.add_argument(
        "--late",
        action="store_true",
        help=f"eval: every window's text lags 1-{LATE_HOPS} hops (ASR lag)",
    )
    parser.add_argument("--imagine", choices=["gate", "always", "never"], default="gate")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="eval: accuracy by the words in a window and by the utterance's length",
    )
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
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="eval: overrides to try (e.g. engine.asr_beam_size=5); --against's baseline "
        "starts from the config without them; --readme writes block spoken-<corpus>-<overrides>",
    )
    parser.add_argument(
        "--valid",
        type=Path,
        help="eval: the label.csv whose valid split is spoken and scored (default: the "
        "config's data.valid_path, the selection set); e.g. ../shared/data/mosei/label.csv, "
        "which no engine checkpoint selects on",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="eval: measure the full model, vision missing, audio missing and text late, "
        "and write the table into README.md's spoken-<corpus> block",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.valid and args.valid.resolve() == Path(config.data.valid_path or "").resolve():
        args.valid = None  # the selection set itself
    scored = [f"data.valid_path={args.valid.as_posix()}"] if args.valid else []
    if scored or args.set:
        config = load_config(args.config, scored + args.set)
    torch.set_num_threads(config.train.threads)
    if args.action == "featurize":
        records = [r for rs in config_records(config, "train") for r in rs]
        valid = config_records(config, "valid")[0]
        print(
            featurize(
                valid + records if args.voice == "varied" else valid, config.engine, args.voice
            )
        )
        return
    from .run import load_for_eval

    checkpoint = args.checkpoint or EngineConfig().checkpoint
    model, _, encoder = load_for_eval(checkpoint)
    dims = dict(model.fusion.config.input_dims)

    def valid_windows(config: Config, drop: Sequence[str] = args.drop, late: bool = args.late):
        valid = valid_split(config, encoder, dims, late=float(late), voices=args.voice)
        for sample in valid.samples:
            for modality in drop:
                sample.features.pop(modality, None)
        return MultimodalDataset([s for s in valid.samples if s.features], valid.dims, valid.name)

    valid = valid_windows(config)
    pred, label = predict(model, make_loader(valid, 256), imagine=args.imagine)
    asked = level_metrics(pred, label, valid.samples)
    print(json.dumps(asked, indent=2))
    recognition: list[str] = []
    if args.breakdown:
        (records,) = config_records(config, "valid")
        gold = {r.id: r.text for r in records}
        print("\n".join(breakdown(pred.numpy(), label.numpy(), valid.samples, gold)))
        recognition = recogniser_cost(model, encoder, records, valid.samples)
        print("\n".join(recognition))
    rows = {}
    if args.readme:  # before any baseline model replaces the encoder
        for name, (drop, late) in CONDITIONS.items():
            same = sorted(drop) == sorted(args.drop) and (late > 0) == args.late
            rows[name] = (
                asked
                if same
                else window_and_utterance_metrics(
                    model, valid_windows(config, drop, late > 0), args.imagine
                )
            )
    difference = None
    if args.against or args.against_checkpoint:
        other = model
        if args.against_checkpoint:
            other, _, encoder = load_for_eval(args.against_checkpoint)
        baseline = valid_windows(load_config(args.config, scored + (args.against or [])))
        difference = paired_difference((model, valid), (other, baseline), args.imagine)
        print(json.dumps(difference, indent=2))
    if args.readme:
        body = readme_block(
            rows,
            checkpoint,
            args.voice,
            difference,
            args.against_checkpoint,
            args.against,
            args.valid,
            args.set,
            recognition,
        )
        publish("-".join([f"spoken-{_corpus(config)}", *args.set]), body)


def _corpus(config: Config) -> str:
    """The scored corpus's folder name ("mosi"): its README block is spoken-<corpus>."""
    return Path(config.data.valid_path or config.data.train_paths[0]).parent.name


def readme_block(
    rows: dict[str, dict[str, dict[str, float]]],
    checkpoint: Path,
    voice: str,
    difference: dict[str, dict[str, float]] | None = None,
    against: Path | None = None,
    overrides: Sequence[str] | None = None,
    valid: Path | None = None,
    tried: Sequence[str] = (),
    recognition: Sequence[str] = (),
) -> str:
    """README's spoken table: per window and per utterance for each condition, with the
    command, the load average and, given a baseline (another checkpoint and/or config
    overrides), the paired intervals. valid: the label.csv scored when it is not the
    selection set; tried: the overrides the scored model ran with (--set); recognition: the
    table of what recognition alone costs (--breakdown's `recogniser_cost`)."""
    command = "python -m stream_mmsa.train.spoken eval --readme" + (
        " --voice fixed" if voice == "fixed" else ""
    )
    if valid is not None:
        command += f" --valid {valid.as_posix()}"
    if tried:
        command += " --set " + " ".join(tried)
    if recognition:
        command += " --breakdown"
    if against is not None:
        command += f" --against-checkpoint {against.name}"
    if overrides:
        command += " --against " + " ".join(overrides)
    baseline = " ".join([*([against.name] if against else []), *(overrides or [])])
    speech = "the old fixed voice" if voice == "fixed" else "a voice drawn per utterance"
    if valid is None:
        name, role = "MOSI", "selection set"
    else:
        name = valid.parent.name.upper()
        role = "not the selection set: the config's checkpoints select on MOSI valid"
    lines = [
        f"`{command}` (load {os.getloadavg()[0]:.1f}): `{checkpoint.name}` on {name} "
        f"**valid** ({role}) spoken in {speech}; per utterance = mean score of its windows; "
        f"text late = every window's text lags 1-{LATE_HOPS} hops "
        f"(0.5-{LATE_HOPS * 0.5:g} s of ASR lag).",
        "",
        *metrics_table(f"{name} valid, spoken through the engine", rows),
    ]
    if recognition:
        lines += ["", *recognition]
    if difference is not None:
        subject = f"`{' '.join(tried)}`" if tried else "Full model"
        lines += [
            "",
            f"{subject} minus `{baseline or 'baseline'}`, paired over "
            f"{difference['utterances']['count']:.0f} utterances (95 % bootstrap intervals): "
            + interval_text(difference)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def metrics_table(title: str, rows: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown lines of MOSI metrics: a row per condition (`rows`' keys) and level."""
    lines = [
        f"| {title} | Non0_acc_2 | Non0_F1 | Has0_acc_2 | Acc_7 | MAE | Corr |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, levels in rows.items():
        for level, m in levels.items():
            lines.append(
                f"| {name}, per {level} ({m['count']:.0f}) | {100 * m['Non0_acc_2']:.2f} | "
                f"{100 * m['Non0_F1_score']:.2f} | {100 * m['Has0_acc_2']:.2f} | "
                f"{100 * m['Mult_acc_7']:.2f} | {m['MAE']:.3f} | {m['Corr']:.3f} |"
            )
    return lines


def interval_text(difference: dict[str, dict[str, float]]) -> str:
    """`paired_bootstrap`'s differences as "name +d [low, high]", accuracy in points."""
    parts = []
    for name, d in difference.items():
        if name == "utterances":
            continue
        scale, unit = (100, " points") if "acc" in name else (1, "")
        parts.append(
            f"{name} {scale * d['difference']:+.3g}{unit} "
            f"[{scale * d['ci95_low']:+.3g}, {scale * d['ci95_high']:+.3g}]"
        )
    return "; ".join(parts)


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
    sides = []
    for model, data in (tried, baseline):
        pred, label = predict(model, make_loader(data, 256), imagine=imagine)
        sides.append((pred.numpy(), label.numpy(), utterances(data.samples)))
    return paired_bootstrap(sides[0], sides[1], resamples, seed)


Scored = tuple[np.ndarray, np.ndarray, dict[str, list[int]]]
"""Window scores, their labels, and the positions of each utterance's windows."""


def paired_bootstrap(
    tried: Scored, baseline: Scored, resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """`tried` minus `baseline` per window and per utterance (accuracy, MAE) over their
    common utterances, with 95 % intervals from resampling utterances."""
    rng = np.random.default_rng(seed)
    sides = (tried, baseline)
    common = sorted(set(tried[2]) & set(baseline[2]))

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
