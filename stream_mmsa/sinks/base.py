"""The one interface every event sink implements: `send` an event, `close` at the end."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..events import AnyEvent

__all__ = ["AnyEvent", "Sink"]


class Sink(ABC):
    """Takes events in `seq` order, one session or many.

    `send` must not block the event loop; a sink that cannot keep up either applies
    backpressure by awaiting (durable sinks) or sheds load it can account for (live
    fan-out), never grows without bound.
    """

    @abstractmethod
    async def send(self, event: AnyEvent) -> None:
        """Deliver or queue one event."""

    @abstractmethod
    async def close(self) -> None:
        """Deliver what is queued and release files, threads and connections."""

    async def __aenter__(self) -> Sink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
