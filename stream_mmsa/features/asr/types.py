"""What the streaming recogniser takes and gives: settings, words, updates, the decoder contract.

Kept apart from the policy and the model so tests and callers can build them without either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..vad import MAX_GAP_FILL_S

DEFAULT_MODEL = "tiny.en"


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
    """Streaming ASR settings; the defaults meet the budget in DESIGN.md on 2 CPU cores.

    The defaults were chosen on continuous speech (`benchmarks/bench_asr.py --clips
    continuous`), where every decode costs about the same and so compute follows the decodes
    per second: one per second of speech, with words committed on agreement, at first sight
    when sure, or at the pause that ends a sentence, kept the median commit under 1.5 s.
    """

    model: str = DEFAULT_MODEL
    model_path: str | None = None
    cpu_threads: int = 2
    compute_type: str = "int8"
    beam_size: int = 1
    """Beam width of each decode (1: greedy). 5 cut the word error on spoken MOSI valid (varied
    voices, room noise) from 32 % to 29 %, not on the clean continuous talk, for about twice
    the streaming CPU; the engine read no better with it (README, Recognisers tried)."""
    step_s: float = 1.0
    """Decode after this much new speech: the main latency/compute trade-off (0.5 s cost
    1.6 decodes per second of continuous speech, 1 s one)."""
    min_window_s: float = 2.0
    """First decode of an utterance waits for this much audio. On continuous speech the 1 s
    first decodes committed nothing (15 of 15) and often looped on the prompt: they were a
    quarter of the decodes, and dropping them kept the text and the median commit latency.
    It also leaves a live window at an utterance's start holding the sentence before (README,
    continuous-mosi), yet 1 or 1.5 s read that talk no better live and worse at --fast: the
    opening words heard in so little audio are often wrong, and they stay."""
    context_s: float = 0.5
    """Committed audio kept before the tail and forced as decoder prefix (0: cut at commits).
    Each forced token costs a decoder step, as a new one does."""
    stability_s: float = 1.0
    """Words ending this long before the window end are committed even without agreement."""
    sure_prob: float = 0.7
    """Words this probable that end `sure_s` before the window end commit at first sight
    (above 1: never):
    with a decode per second, waiting for a second agreeing one costs a second of latency."""
    sure_s: float = 0.4
    max_window_s: float = 12.0
    """Hard bound on the decoded window when nothing can be committed (e.g. music as speech)."""
    max_pending_s: float | None = 8.0
    """Undecoded audio beyond this is skipped; None processes everything (offline use)."""
    resume_s: float = 2.0
    """After a skip, decoding resumes on this much of the newest audio."""
    prompt_chars: int = 200
    vad: bool = True
    vad_threshold: float = 0.5
    min_silence_s: float = 0.3
    """Silence that ends an utterance (and commits its tail)."""
    min_speech_s: float = 0.2
    """Utterances with less speech than this (clicks, coughs) are dropped undecoded."""
    speech_pad_s: float = 0.2
    """Audio kept before speech onset and after its end, as Silero's own pad."""
    max_gap_fill_s: float = MAX_GAP_FILL_S
    """Gaps in the input up to this long are filled with silence; longer ones end the utterance."""
    pad_s: float = 1.0
    """Silence appended to each window: without it Whisper does not see the speech end and
    loops on short windows (12 of 20 test windows looped unpadded, 1 of 20 with 2 s); 1 s
    keeps the continuous-speech WER and encodes a third less per window than 2 s."""
    max_tokens_per_s: float = 7.0
    """A decode's token budget per second of new audio (plus 4): where a loop stops. 4 saved 3 %
    of the streamer's CPU on the continuous talk at the same WER (`bench_asr.py --clips
    continuous --dither 4 --set max_tokens_per_s=4`): the loops are not where its cost over
    one offline pass goes (most likely the re-decoded overlap of successive windows)."""
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4

    def __post_init__(self) -> None:
        positive = ("step_s", "min_window_s", "max_window_s", "resume_s", "min_silence_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"asr {name} must be > 0")
        if min(self.context_s, self.speech_pad_s, self.max_gap_fill_s, self.pad_s, self.sure_s) < 0:
            raise ValueError(
                "asr context_s, speech_pad_s, max_gap_fill_s, pad_s, sure_s must be >= 0"
            )
        if self.speech_pad_s > self.min_silence_s:
            raise ValueError("asr speech_pad_s must not exceed min_silence_s")
        if self.max_window_s + self.pad_s > 28.0:
            raise ValueError("asr max_window_s + pad_s must leave room in Whisper's 30 s window")
        if self.max_pending_s is not None and self.max_pending_s <= self.resume_s:
            raise ValueError("asr max_pending_s must exceed resume_s")
        if self.cpu_threads < 1:
            raise ValueError("asr cpu_threads must be >= 1")
        if self.beam_size < 1:
            raise ValueError("asr beam_size must be >= 1")


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
        self,
        audio: np.ndarray,
        prompt: str,
        prefix: str,
        max_new_tokens: int,
        pad_s: float,
        beam_size: int = 1,
    ) -> Hypothesis: ...
