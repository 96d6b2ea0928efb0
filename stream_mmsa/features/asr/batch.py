"""Decodes of every session, batched on one thread.

Each session's recogniser steps on a thread of its own and blocks in `Batcher.run` while
its window is decoded. The batcher's thread takes whatever windows are waiting, up to
`max_batch`, and decodes them together: nothing waits for company, so a lone session
decodes exactly as before, and sessions that ask while a batch runs share the next one.

Why windows of similar length only (the longest at most `SPREAD` times the shortest, audio
plus padding): the encoder pads a batch to its longest window, so mixing a 2 s window with
an 8 s one costs the short one three times its encoder work and eats the decoder's gain.
Measured on tiny.en int8, 2 threads: four 3.6 s windows in one call take 0.26-0.29 CPU-s
against 0.54 one by one; four windows of 2-4 s took as long batched as alone.

One failing window fails only its own caller: a batch that raises is retried window by
window.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from ...media.frames import AUDIO_RATE
from .types import Hypothesis


@dataclass(frozen=True, slots=True)
class Request:
    """One window to decode: its audio, the older text as prompt, the committed text in it as
    a forced prefix, a token budget, the silence appended before encoding and the beam width
    (1: greedy)."""

    audio: np.ndarray
    prompt: str
    prefix: str
    max_new_tokens: int
    pad_s: float
    beam_size: int = 1


DecodeMany = Callable[[Sequence[Request]], list[Hypothesis]]

SPREAD = 1.3
"""Longest over shortest window (audio plus padding) decoded in one call."""


def similar_lengths(requests: Sequence[Request], spread: float = SPREAD) -> list[list[int]]:
    """Indices of `requests` in groups of one beam width whose lengths are within `spread`
    of each other (one decode call searches with one beam width)."""
    length = [len(r.audio) / AUDIO_RATE + r.pad_s for r in requests]
    groups: list[list[int]] = []
    for i in sorted(range(len(requests)), key=lambda i: (requests[i].beam_size, length[i])):
        first = groups[-1][0] if groups else None
        if (
            first is not None
            and requests[i].beam_size == requests[first].beam_size
            and length[i] <= spread * length[first]
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class Batcher:
    """One daemon thread running `decode_many` over the requests that are waiting."""

    def __init__(self, decode_many: DecodeMany, max_batch: int = 8, name: str = "asr-batch"):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.decode_many = decode_many
        self.max_batch = max_batch
        self.batch_sizes: dict[int, int] = {}
        self._waiting: queue.SimpleQueue[tuple[Request, Future[Hypothesis]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, request: Request) -> Hypothesis:
        """Decode `request` with whatever else is waiting; blocks until it is done."""
        done: Future[Hypothesis] = Future()
        self._waiting.put((request, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            batch = [self._waiting.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            for group in similar_lengths([request for request, _ in batch]):
                self._decode([batch[i] for i in group])

    def _decode(self, batch: list[tuple[Request, Future[Hypothesis]]]) -> None:
        try:
            results = self.decode_many([request for request, _ in batch])
        except Exception as error:  # handed to the caller(s), never lost
            if len(batch) == 1:
                batch[0][1].set_exception(error)
                return
            for one in batch:  # isolate the bad window: only its caller fails
                self._decode([one])
            return
        self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
        for (_, done), result in zip(batch, results, strict=True):
            done.set_result(result)
