"""The streaming policy: VAD-gated window decoding and the commit rules (`TranscriberCore`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from ...media.frames import AUDIO_RATE, AudioChunk, SpeechFrames
from ..vad import SpeechTrack, VoiceDetector, check_chunk, joined
from .guards import (
    agreed_prefix,
    compression_ratio,
    cut_collapsed,
    cut_echo,
    cut_repetition,
    normalize_word,
)
from .types import AsrConfig, AsrStats, TranscriptUpdate, WindowDecoder, Word

_NO_AUDIO_S = 0.04
"""A word starting this close to the window end (or later, in the padding) is hallucinated."""


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
    more than `stability_s` before the window end and sure words (`sure_prob`) that ended
    `sure_s` before it. Then the buffer is cut in the gap before
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
        while n < len(hyp) and (
            hyp[n].end <= end - cfg.stability_s
            or (hyp[n].prob >= cfg.sure_prob and hyp[n].end <= end - cfg.sure_s)
        ):
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
        hyp = self.decoder.decode(audio, self._prompt, prefix, budget, cfg.pad_s, cfg.beam_size)
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
        if hyp.truncated and len(words) == len(hyp.words):
            # The budget ran out inside the last word. When the guards above already cut a
            # loop, the budget ran out in the loop: the words before it are whole.
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
