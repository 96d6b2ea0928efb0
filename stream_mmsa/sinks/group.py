"""Fan-out to several sinks, so that one failing sink never stops the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from .base import AnyEvent, Sink

log = logging.getLogger(__name__)


@dataclass
class SinkFailure:
    """A sink that stopped taking events: which, why, and how many events it did not get."""

    sink: str
    error: str
    lost: int = 0

    def describe(self) -> str:
        return f"{self.sink} failed ({self.error}); {self.lost} events lost"


class SinkFailed(Exception):
    """Sinks failed for the first time on this send; the other sinks still got the event."""

    def __init__(self, failures: list[SinkFailure]) -> None:
        super().__init__("; ".join(f.describe() for f in failures))
        self.failures = failures


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


class SinkGroup(Sink):
    """Sends each event to every sink concurrently; a sink that raises is cut off.

    A failed sink gets no further events (a log with holes is worse than a log that ends
    where it says it ends), and every event it misses from then on is counted as lost.
    The first failure of each sink raises `SinkFailed` after the others got the event, so
    the session can tell the remaining sinks and the user; `failed` keeps the account for
    the summary. A sink that fails only at `close` is reported with nothing counted lost:
    it does not say how many of the events it accepted it could not commit.
    """

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.failures: list[int] = [0] * len(self.sinks)
        self._failed: dict[int, SinkFailure] = {}

    @property
    def failed(self) -> list[SinkFailure]:
        return [self._failed[i] for i in sorted(self._failed)]

    async def send(self, event: AnyEvent) -> None:
        live = [i for i in range(len(self.sinks)) if i not in self._failed]
        for failure in self._failed.values():
            failure.lost += 1
        for i in self._failed:
            self.failures[i] += 1
        results = await asyncio.gather(
            *(self.sinks[i].send(event) for i in live), return_exceptions=True
        )
        new = [
            self._fail(i, result, lost=1)
            for i, result in zip(live, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if new:
            raise SinkFailed(new)

    async def close(self) -> None:
        results = await asyncio.gather(
            *(sink.close() for sink in self.sinks), return_exceptions=True
        )
        for i, result in enumerate(results):
            if isinstance(result, BaseException) and i not in self._failed:
                self._fail(i, result, lost=0)

    def _fail(self, i: int, error: BaseException, lost: int) -> SinkFailure:
        failure = self._failed[i] = SinkFailure(repr(self.sinks[i]), _reason(error), lost)
        self.failures[i] += 1
        log.warning("sink %r failed; others continue", self.sinks[i], exc_info=error)
        return failure
