"""Offers in, sessions out: one aiortc peer connection and one engine session per offer.

The gateway owns the lifecycle: a session ends when its peer's tracks end, when the
connection fails or closes, or when media stops for `idle_timeout` (a vanished peer);
then its peer connection is closed and its slot freed. A session that fails is logged
and cleaned up like any other; the rest carry on.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from pydantic import BaseModel, ConfigDict, Field

from ...config import IceServer
from ...engine import Runtime, Session
from ...sinks.base import Sink
from ...sinks.group import SinkGroup
from .datachannel import DataChannelSink
from .source import TrackSource, TrackStats

log = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
"""Room and participant names: short, printable, safe in URLs, logs and metrics."""


class OfferRequest(BaseModel):
    """The body of POST /offer."""

    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1)
    type: Literal["offer"]
    room: str | None = Field(None, pattern=NAME_PATTERN)
    participant: str | None = Field(None, pattern=NAME_PATTERN)


class GatewayError(Exception):
    """A refused offer: an HTTP status, a stable code for programs, a message for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _one_person(tracks: list[MediaStreamTrack]) -> list[MediaStreamTrack]:
    """The offer's audio and video tracks: at least one, at most one of each kind.

    A session is one person; a track nobody reads would queue its frames forever.
    """
    media = [t for t in tracks if t.kind in ("audio", "video")]
    kinds = [t.kind for t in media]
    if not media:
        raise GatewayError(400, "no_media", "the offer has no audio or video track")
    if len(set(kinds)) < len(kinds):
        raise GatewayError(
            400, "too_many_tracks", f"one audio and one video track per offer, got {kinds}"
        )
    return media


@dataclass(eq=False)
class Peer:
    """One connected peer and the session analysing its tracks."""

    pc: RTCPeerConnection
    source: TrackSource
    session: Session
    events: DataChannelSink
    task: asyncio.Task[None] | None = None


def rtc_configuration(servers: Sequence[IceServer]) -> RTCConfiguration | None:
    """The server's side of each call uses the STUN/TURN servers the page gets: behind NAT
    it needs candidates of its own through them. None (aiortc's default) when none is set."""
    if not servers:
        return None
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers
        ]
    )


class WebRTCGateway:
    """Accepts offers up to `max_sessions` concurrent sessions, runs and cleans them up.

    `sinks` are shared by every session (the event log, the websocket hub, metrics);
    each session also gets its own data-channel sink.
    """

    def __init__(
        self,
        runtime: Runtime,
        sinks: Sequence[Sink],
        *,
        max_sessions: int = 8,
        idle_timeout: float = 10.0,
        max_message_bytes: int = 4096,
        ice_servers: Sequence[IceServer] = (),
        shutdown_grace: float = 10.0,
    ) -> None:
        self.runtime = runtime
        self.configuration = rtc_configuration(ice_servers)
        self.sinks = tuple(sinks)
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes
        self.shutdown_grace = shutdown_grace
        self.peers: dict[str, Peer] = {}
        self.outcomes: Counter[str] = Counter()
        self.ended_stats = TrackStats()
        self._reserved = 0

    async def accept(self, offer: OfferRequest) -> dict[str, str]:
        """Answer `offer` and start its session; raises GatewayError when refused."""
        if len(self.peers) + self._reserved >= self.max_sessions:
            self.outcomes["refused"] += 1
            raise GatewayError(
                503,
                "session_limit",
                f"the server is at its limit of {self.max_sessions} concurrent sessions; "
                "try again later",
            )
        self._reserved += 1
        try:
            peer = await self._connect(offer)
        finally:
            self._reserved -= 1
        self.peers[peer.session.id] = peer
        peer.task = asyncio.create_task(self._run(peer), name=f"session-{peer.session.id}")
        return {"type": "answer", "sdp": peer.pc.localDescription.sdp, "session": peer.session.id}

    async def close(self) -> None:
        """End every session and wait for their cleanup, `shutdown_grace` seconds at most:
        one stuck session must not keep the server from stopping."""
        for peer in list(self.peers.values()):
            peer.session.stop("server shutting down")
            peer.source.stop("server shutting down")
        tasks = [peer.task for peer in self.peers.values() if peer.task is not None]
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=self.shutdown_grace)
        for task in stuck:
            log.warning(
                "%s did not end within %g s; cancelled", task.get_name(), self.shutdown_grace
            )
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> TrackStats:
        """Source counters over every session, ended and running."""
        total = TrackStats(**vars(self.ended_stats))
        for peer in self.peers.values():
            total.add(peer.source.stats)
        return total

    async def _connect(self, offer: OfferRequest) -> Peer:
        pc = RTCPeerConnection(self.configuration)
        tracks: list[MediaStreamTrack] = []
        events = DataChannelSink()
        pc.on("track", tracks.append)
        pc.on("datachannel", lambda channel: self._on_channel(channel, events))
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            except Exception as error:  # aiortc raises many types on bad SDP; all mean the same
                raise GatewayError(
                    400, "malformed_offer", f"the SDP offer cannot be used: {error or type(error)}"
                ) from error
            media = _one_person(tracks)
        except GatewayError:
            await pc.close()
            raise
        await pc.setLocalDescription(await pc.createAnswer())
        session_id = uuid.uuid4().hex[:12]
        source = TrackSource(media, name=f"webrtc:{session_id}", idle_timeout=self.idle_timeout)

        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                source.stop(f"connection {pc.connectionState}")

        pc.on("connectionstatechange", on_state)
        session = Session(
            self.runtime,
            source,
            SinkGroup([*self.sinks, events]),
            session_id=session_id,
            room=offer.room,
            participant=offer.participant,
        )
        return Peer(pc, source, session, events)

    def _on_channel(self, channel: RTCDataChannel, events: DataChannelSink) -> None:
        if channel.label == "events":
            events.attach(channel)

        def on_message(message: str | bytes) -> None:
            if len(message) > self.max_message_bytes:
                log.warning(
                    "data channel %r: %d-byte message over the %d-byte limit, closing it",
                    channel.label,
                    len(message),
                    self.max_message_bytes,
                )
                channel.close()

        channel.on("message", on_message)

    async def _run(self, peer: Peer) -> None:
        session_id = peer.session.id
        try:
            summary = await peer.session.run()
            outcome = "failed" if summary.error is not None else "ended"
            self.outcomes[outcome] += 1
            log.info("session %s %s", session_id, summary.ended)
        except Exception:
            self.outcomes["failed"] += 1
            log.exception("session %s failed; other sessions continue", session_id)
        finally:
            await peer.pc.close()
            await peer.events.close()
            self.ended_stats.add(peer.source.stats)
            del self.peers[session_id]
