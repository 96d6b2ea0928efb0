"""The websocket hub: live events to any number of clients at ws://HOST:PORT/events.

Clients connect to `/events` (all sessions) or `/events?session=a&session=b`, and get
one text frame per event, the event's JSON. The hub is an aiohttp route, so the WebRTC
gateway mounts the same hub on its own app (`add_routes`); `start` serves it alone.

Why a bounded queue per client: one slow client (a phone on a bad link) must not slow
the others or grow memory. When a client's queue is full it is closed with code 4001
and a reason, and it can reconnect and resume from the event log by `seq`. A client
that vanishes without closing is found by websocket heartbeats and removed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, web

from .base import AnyEvent, Sink

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4001
"""Close code (private range) for a client whose send queue overflowed."""


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    peer: str | None
    sessions: frozenset[str] | None  # None: every session
    queue: asyncio.Queue[str]
    writer: asyncio.Task[None] | None = field(default=None)

    def wants(self, session: str) -> bool:
        return self.sessions is None or session in self.sessions


class WebSocketHub(Sink):
    """Fans events out to subscribed websocket clients, each behind its own bounded queue.

    max_queue: events a client may have unsent before it is dropped.
    heartbeat: seconds between pings; a client that misses a pong is closed.
    close_timeout: seconds a closing handshake may take before the connection is cut.
    Frames are not compressed: events are small, and deflate per client costs CPU per
    client for every event.
    """

    def __init__(
        self,
        *,
        path: str = "/events",
        max_queue: int = 256,
        heartbeat: float = 20.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.path = path
        self.max_queue = max_queue
        self.heartbeat = heartbeat
        self.close_timeout = close_timeout
        self.sent = 0
        self.dropped = 0
        self._clients: set[_Client] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None

    @property
    def clients(self) -> int:
        """Connected clients."""
        return len(self._clients)

    def add_routes(self, app: web.Application) -> None:
        """Serve the hub at `path` on `app`; clients are closed when the app shuts down."""
        app.router.add_get(self.path, self._handle)
        app.on_shutdown.append(self._on_shutdown)

    async def start(self, host: str = "127.0.0.1", port: int = 8765) -> int:
        """Serve the hub on its own server; returns the bound port (useful with port 0)."""
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        return int(self._runner.addresses[0][1])

    async def send(self, event: AnyEvent) -> None:
        """Queue the event for every subscribed client; never waits on a client."""
        text = event.to_json()
        for client in list(self._clients):
            if not client.wants(event.session):
                continue
            try:
                client.queue.put_nowait(text)
            except asyncio.QueueFull:
                self._drop(
                    client,
                    CLOSE_SLOW_CONSUMER,
                    f"slow consumer: {self.max_queue} events unsent; reconnect and resume by seq",
                )

    async def close(self) -> None:
        """Close every client (going away) and stop the server if `start` made one."""
        await self._on_shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_shutdown(self, app: web.Application | None = None) -> None:
        for client in list(self._clients):
            self._drop(client, WSCloseCode.GOING_AWAY, "server shutting down")
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        requested = request.query.getall("session", [])
        ws = web.WebSocketResponse(
            heartbeat=self.heartbeat, timeout=self.close_timeout, compress=False
        )
        await ws.prepare(request)
        client = _Client(
            ws=ws,
            transport=request.transport,
            peer=request.remote,
            sessions=frozenset(requested) if requested else None,
            queue=asyncio.Queue(self.max_queue),
        )
        client.writer = asyncio.create_task(self._write(client))
        self._clients.add(client)
        try:
            async for _ in ws:  # clients only listen; reading notices closes and pongs
                pass
        finally:
            self._clients.discard(client)
            client.writer.cancel()
        return ws

    async def _write(self, client: _Client) -> None:
        try:
            while True:
                text = await client.queue.get()
                await client.ws.send_str(text)
                self.sent += 1
        except ConnectionError:
            pass  # the peer is gone; its handler cleans up

    def _drop(self, client: _Client, code: int, reason: str) -> None:
        """Stop routing to `client` now and close it in the background."""
        if client not in self._clients:
            return
        self._clients.discard(client)
        if code == CLOSE_SLOW_CONSUMER:
            self.dropped += 1
            log.warning("dropping websocket client %s: %s", client.peer, reason)
        task = asyncio.create_task(self._close_client(client, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_client(self, client: _Client, code: int, reason: str) -> None:
        """Close handshake, bounded in time; a peer that stops reading is cut off.

        After a clean close the socket may still hold unsent bytes for a peer that never
        reads them, so it is aborted `close_timeout` later in any case.
        """
        transport = client.transport
        try:
            await asyncio.wait_for(
                client.ws.close(code=code, message=reason.encode(), drain=False),
                self.close_timeout,
            )
        except (TimeoutError, ConnectionError):
            if transport is not None:
                transport.abort()
        else:
            if transport is not None:
                asyncio.get_running_loop().call_later(self.close_timeout, transport.abort)
