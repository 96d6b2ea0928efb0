"""The websocket hub: live events to any number of clients at ws://HOST:PORT/events.

Clients connect to `/events` (all sessions), `/events?session=a&session=b` or
`/events?room=r` (every participant of a room), and get one text frame per event, the
event's JSON. The hub is an aiohttp route, so the WebRTC gateway mounts the same hub on
its own app (`add_routes`); `start` serves it alone.

Resume: with an event log, `after=SEQ` (one session) or `after=SESSION:SEQ` (repeatable)
first replays that session's logged events with a larger seq, then continues live; live
events the replay already covered are skipped, so a reconnecting client gets every
event once, in order.

Why a bounded queue per client: one slow client (a phone on a bad link) must not slow
the others or grow memory. When a client's queue is full it is closed with code 4001
and a reason, and it can reconnect and resume from the event log by `seq`. A client
that vanishes without closing is found by websocket heartbeats and removed. A client
whose events cannot be sent for another reason (the log failed) is closed with 1011.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, web

from .base import AnyEvent, Sink
from .eventlog import EventLog

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4001
"""Close code (private range) for a client whose send queue overflowed."""

MAX_SEQ = 2**63 - 1
"""The largest seq the event log can hold (SQLite INTEGER); a larger `after=` is refused."""

MAX_NAMES = 64
"""`session`, `room` and `after` parameters a subscription may have, together."""

MAX_NAME_LENGTH = 128
"""Characters in one session or room name (sessions are 12 hex digits, rooms at most 64)."""


REPLAY_PAGE = 500
"""Logged events read per query while replaying."""


@dataclass(frozen=True)
class Subscription:
    """Which events a client gets: named sessions and rooms, or everything if neither."""

    sessions: frozenset[str] = frozenset()
    rooms: frozenset[str] = frozenset()
    after: dict[str, int] = field(default_factory=dict)  # session -> last seq it has

    def wants(self, event: AnyEvent) -> bool:
        if not (self.sessions or self.rooms):
            return True
        return event.session in self.sessions or (
            event.room is not None and event.room in self.rooms
        )

    @classmethod
    def from_query(cls, query) -> Subscription:
        """Parse `session`, `room` and `after` parameters; ValueError says what is wrong.

        Bounded, because each name costs a lookup per event and each `after` a replay.
        """
        given = {key: query.getall(key, []) for key in ("session", "room", "after")}
        if sum(map(len, given.values())) > MAX_NAMES:
            raise ValueError(f"at most {MAX_NAMES} session, room and after parameters together")
        for key in ("session", "room"):
            for name in given[key]:
                if not 0 < len(name) <= MAX_NAME_LENGTH:
                    raise ValueError(f"{key}= needs a name of 1 to {MAX_NAME_LENGTH} characters")
        sessions = frozenset(given["session"])
        after: dict[str, int] = {}
        for value in given["after"]:
            session, _, seq = value.rpartition(":")
            if not session:
                if len(sessions) != 1:
                    raise ValueError(
                        "after=SEQ needs exactly one session=; else use after=SESSION:SEQ"
                    )
                session = next(iter(sessions))
            if len(session) > MAX_NAME_LENGTH:
                raise ValueError(f"after=: a session name has at most {MAX_NAME_LENGTH} characters")
            try:
                after[session] = int(seq)
            except ValueError:
                raise ValueError(f"after={value!r}: the seq must be an integer") from None
            if not -1 <= after[session] <= MAX_SEQ:
                raise ValueError(f"after={value!r}: the seq must be from -1 to {MAX_SEQ}")
        return cls(sessions, frozenset(given["room"]), after)


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    peer: str | None
    subscription: Subscription
    queue: asyncio.Queue[AnyEvent]
    writer: asyncio.Task[None] | None = field(default=None)


class WebSocketHub(Sink):
    """Fans events out to subscribed websocket clients, each behind its own bounded queue.

    max_queue: events a client may have unsent before it is dropped.
    heartbeat: seconds between pings; a client that misses a pong is closed.
    close_timeout: seconds a closing handshake may take before the connection is cut.
    max_message: bytes a client may send in one message (clients only listen); a larger
      one closes it with 1009 (message too big).
    log: the event log that `after=` resumes from (None: resuming is refused).
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
        max_message: int = 4096,
        log: EventLog | None = None,
    ) -> None:
        self.path = path
        self.max_queue = max_queue
        self.heartbeat = heartbeat
        self.close_timeout = close_timeout
        self.max_message = max_message
        self.log = log
        self.sent = 0
        self.dropped = 0
        self._clients: set[_Client] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None

    @property
    def clients(self) -> int:
        """Connected clients."""
        return len(self._clients)

    @property
    def queued(self) -> int:
        """Events waiting in client queues."""
        return sum(client.queue.qsize() for client in self._clients)

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
        for client in list(self._clients):
            if not client.subscription.wants(event):
                continue
            try:
                client.queue.put_nowait(event)
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
        try:
            subscription = Subscription.from_query(request.query)
        except ValueError as error:
            raise _bad_request("bad_subscription", str(error)) from None
        if subscription.after and self.log is None:
            raise _bad_request("no_event_log", "resuming (after=) needs the event log")
        ws = web.WebSocketResponse(
            heartbeat=self.heartbeat,
            timeout=self.close_timeout,
            compress=False,
            max_msg_size=self.max_message,
        )
        await ws.prepare(request)
        client = _Client(
            ws=ws,
            transport=request.transport,
            peer=request.remote,
            subscription=subscription,
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
        """Replay from the log (live events queue meanwhile), then send live events.

        `last` is the newest seq the client has per session, so nothing goes twice.
        """
        last = dict(client.subscription.after)
        try:
            if last:
                assert self.log is not None
                await self.log.flush()
                for session in last:
                    while events := await asyncio.to_thread(
                        self.log.read, session, last[session], REPLAY_PAGE
                    ):
                        for event in events:
                            await client.ws.send_str(event.to_json())
                            self.sent += 1
                        last[session] = events[-1].seq
            while True:
                event = await client.queue.get()
                if event.seq <= last.get(event.session, -1):
                    continue
                await client.ws.send_str(event.to_json())
                self.sent += 1
        except ConnectionError:
            pass  # the peer is gone; its handler cleans up
        except Exception:  # a bug or a log failure: say so, rather than stall into 4001
            log.exception("websocket client %s: sending events failed", client.peer)
            self._drop(client, WSCloseCode.INTERNAL_ERROR, "internal error; reconnect later")

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


def _bad_request(code: str, message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps({"error": code, "message": message}), content_type="application/json"
    )
