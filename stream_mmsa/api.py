"""The library API: one `Engine` owning the models, `analyze()` as an async iterator of events.

    async with Engine() as engine:
        async for event in engine.analyze("clip.mp4"):
            ...

Events come from the same `Session` the command line and the server run, through a
bounded queue: a consumer that reads slowly slows the session down (files) or makes it
drop media it accounts for (live sources), never makes memory grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from .config import EngineConfig
from .engine import Runtime, Session, SessionSummary
from .events import AnyEvent
from .media.sources.base import Source
from .media.sources.file import FileSource
from .sinks.base import Sink
from .sinks.group import SinkGroup

EVENT_BUFFER = 64
"""Events held for the consumer before the session waits for it (about 10 s of events)."""


class _Feed(Sink):
    """The consumer's end of a session: `send` waits while the queue is full."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AnyEvent] = asyncio.Queue(EVENT_BUFFER)
        self._dropping = False

    async def send(self, event: AnyEvent) -> None:
        if not self._dropping:
            await self.queue.put(event)

    def drop(self) -> None:
        """The consumer is gone: events go nowhere from now on and a waiting `send` returns."""
        self._dropping = True
        while not self.queue.empty():
            self.queue.get_nowait()

    async def close(self) -> None:
        """Nothing to release: the queue is the consumer's."""


class Engine:
    """The models, loaded once on entering, shared by every `analyze()` in the block.

    Leaving the block stops the sessions still running and waits for them.
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._runtime: Runtime | None = None
        self._running: dict[asyncio.Task[SessionSummary], tuple[Session, _Feed]] = {}

    async def __aenter__(self) -> Engine:
        self._runtime = Runtime(self.config)
        await self._runtime.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task, (session, feed) in list(self._running.items()):
            session.stop("engine closed")
            feed.drop()
            await asyncio.wait({task})
        if self._runtime is not None:
            await self._runtime.__aexit__(*exc)
            self._runtime = None

    async def analyze(
        self,
        source: str | Path | Source,
        *,
        realtime: bool | None = None,
        session_id: str | None = None,
        sinks: Sequence[Sink] = (),
    ) -> AsyncIterator[AnyEvent]:
        """Events of one session on `source`, the last a `SessionEvent` (ended or failed).

        source: a media file's path, any Source, or a PushSource you feed.
        realtime: windows close on the wall clock (True) or once their media is in (False,
          as fast as possible); None: True for live sources (those with an `origin`, such as
          PushSource), False for files.
        sinks: also send every event there (e.g. a JsonlSink); they stay open, close them.
        Stopping early (`break` inside `contextlib.aclosing(...)`, or `aclose()`) stops the
        session and waits for it to end.
        """
        if self._runtime is None:
            raise RuntimeError("use the engine inside `async with Engine() as engine:`")
        if isinstance(source, str | Path):
            source = FileSource(source, realtime=bool(realtime))
        if realtime is None:
            realtime = source.origin is not None
        feed = _Feed()
        session = Session(
            self._runtime,
            source,
            SinkGroup([feed, *sinks]),
            session_id=session_id,
            realtime=realtime,
        )
        task = asyncio.create_task(session.run(), name=f"stream-mmsa-session-{session.id}")
        self._running[task] = (session, feed)
        task.add_done_callback(self._running.pop)
        try:
            while (event := await _next(feed.queue, task)) is not None:
                yield event
            task.result()  # a session reports its failures as events; this is anything else
        finally:
            if not task.done():
                session.stop("the consumer stopped reading")
                feed.drop()
                await task


async def _next(
    queue: asyncio.Queue[AnyEvent], task: asyncio.Task[SessionSummary]
) -> AnyEvent | None:
    """The next event, or None once the session is over and every event has been read."""
    while queue.empty():
        if task.done():
            return None
        following = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait({following, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            following.cancel()  # no-op when it got an event; the queue keeps it otherwise
        if not following.cancelled():
            return following.result()
    return queue.get_nowait()
