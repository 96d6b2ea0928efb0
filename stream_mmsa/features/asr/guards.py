"""Text guards: word normalisation, agreement, and cuts against loops on short windows."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from .types import Word


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
