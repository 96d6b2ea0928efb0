"""Decodes of several sessions batched on one thread (features/asr/batch.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from stream_mmsa.features.asr.batch import Batcher, Request, similar_lengths
from stream_mmsa.features.asr.types import Hypothesis


def request(seconds: float, prefix: str = "", beam_size: int = 1) -> Request:
    return Request(np.zeros(round(seconds * 16000), np.float32), "", prefix, 8, 1.0, beam_size)


def test_windows_of_similar_length_go_together() -> None:
    requests = [request(s) for s in (2.0, 8.0, 2.3, 7.5, 3.9)]
    # lengths with the 1 s padding: 3.0, 9.0, 3.3, 8.5, 4.9
    assert similar_lengths(requests) == [[0, 2], [4], [3, 1]]


def test_windows_searched_with_other_beam_widths_go_apart() -> None:
    """One decode call searches with one beam width: sessions' settings never mix."""
    requests = [request(2.0), request(2.1, beam_size=5), request(2.2), request(2.0, beam_size=5)]
    assert similar_lengths(requests) == [[0, 2], [3, 1]]


def test_a_failing_window_fails_only_its_caller() -> None:
    """A batch that raises is retried window by window; the others get their results."""
    gate = threading.Event()

    def decode_many(requests):
        gate.wait()  # hold the first batch so the rest queue up behind it
        if any(r.prefix == "bad" for r in requests):
            raise ValueError("cannot decode this one")
        return [
            Hypothesis(words=[], no_speech_prob=0.0, avg_logprob=-len(r.prefix)) for r in requests
        ]

    batcher = Batcher(decode_many, max_batch=8)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.run, request(2.0, p)) for p in ("a", "bad", "ccc", "dd")]
        gate.set()
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=10).avg_logprob)
            except ValueError as error:
                outcomes.append(str(error))
    assert outcomes == [-1.0, "cannot decode this one", -3.0, -2.0]


@pytest.mark.slow
def test_concurrent_sessions_share_a_decode_and_hear_what_they_hear_alone() -> None:
    """Real tiny.en: four windows asked for at once are decoded in fewer calls than four,
    and windows of one length give the words each gives alone."""
    from stream_mmsa.features.asr import load_asr_model
    from stream_mmsa.media.speech import speak

    model = load_asr_model()
    texts = ["I really loved this movie", "the story made no sense", "it was a great film"]
    audio = [speak(t) for t in texts]
    length = max(len(a) for a in audio)
    windows = [np.pad(a, (0, length - len(a))) for a in audio]  # one length: one batch
    alone = [model.decode(w, "", "", 16, 1.0) for w in windows]
    together = model.decode_many([Request(w, "", "", 16, 1.0) for w in windows])
    assert [[w.word for w in h.words] for h in together] == [
        [w.word for w in h.words] for h in alone
    ]
    searched = model.decode_many([Request(w, "", "", 16, 1.0, beam_size=5) for w in windows])
    assert [[w.word for w in h.words] for h in searched] == [
        [w.word for w in model.decode(w, "", "", 16, 1.0, beam_size=5).words] for w in windows
    ]
    assert [w.word.strip(".") for w in searched[1].words[:5]] == texts[1].split()
    with pytest.raises(ValueError, match="one beam width"):
        model.decode_many([Request(windows[0], "", "", 16, 1.0, beam_size=b) for b in (1, 5)])
    before = dict(model.batcher.batch_sizes)
    gate = threading.Barrier(4)

    def decode(w: np.ndarray) -> Hypothesis:
        gate.wait()
        return model.decode(w, "", "", 16, 1.0)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(decode, [*windows, windows[0]]))
    calls = sum(n - before.get(size, 0) for size, n in model.batcher.batch_sizes.items())
    assert calls < 4
