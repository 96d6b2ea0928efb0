"""Fan-out to several sinks, so that one failing sink never stops the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from .base import AnyEvent, Sink

log = logging.getLogger(__name__)


class SinkGroup(Sink):
    """Sends each event to every sink concurrently; a sink's error is logged and counted.

    Errors are logged once per streak (when a sink starts failing, and when it recovers)
    so a broken sink does not flood the log at the event rate.
    """

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.failures: list[int] = [0] * len(self.sinks)
        self._failing: set[int] = set()

    async def send(self, event: AnyEvent) -> None:
        results = await asyncio.gather(
            *(sink.send(event) for sink in self.sinks), return_exceptions=True
        )
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                self.failures[i] += 1
                if i not in self._failing:
                    self._failing.add(i)
                    log.warning("sink %r failed; others continue", self.sinks[i], exc_info=result)
            elif i in self._failing:
                self._failing.discard(i)
                log.info("sink %r recovered after %d failures", self.sinks[i], self.failures[i])

    async def close(self) -> None:
        results = await asyncio.gather(
            *(sink.close() for sink in self.sinks), return_exceptions=True
        )
        for sink, result in zip(self.sinks, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("sink %r failed to close", sink, exc_info=result)
