"""Events back to the peer on its `events` data channel."""

from __future__ import annotations

from collections import deque

from aiortc import RTCDataChannel

from ...sinks.base import AnyEvent, Sink

MAX_BUFFERED_BYTES = 1 << 20
"""Bytes the channel may hold unsent; beyond it a slow peer loses live events (they stay
in the event log, where `/events?after=` finds them)."""


class DataChannelSink(Sink):
    """Sends each event as one JSON text message once the peer's channel is open.

    Events before the channel opens (the peer creates it; it opens after DTLS) wait in a
    bounded backlog and go out in order on open.
    """

    def __init__(self, backlog: int = 256) -> None:
        self.channel: RTCDataChannel | None = None
        self.sent = 0
        self.dropped = 0
        self._backlog: deque[str] = deque(maxlen=backlog)

    def attach(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        if channel.readyState == "open":
            self._drain()
        else:
            channel.on("open", self._drain)

    async def send(self, event: AnyEvent) -> None:
        text = event.to_json()
        if self.channel is None or self.channel.readyState == "connecting":
            if len(self._backlog) == self._backlog.maxlen:
                self.dropped += 1
            self._backlog.append(text)
        elif self.channel.readyState == "open":
            self._send(text)

    async def close(self) -> None:
        self._backlog.clear()

    def _drain(self) -> None:
        while self._backlog and self.channel is not None:
            self._send(self._backlog.popleft())

    def _send(self, text: str) -> None:
        assert self.channel is not None
        if self.channel.bufferedAmount > MAX_BUFFERED_BYTES:
            self.dropped += 1
            return
        self.channel.send(text)
        self.sent += 1
