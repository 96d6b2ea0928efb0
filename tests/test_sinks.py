"""Sinks: JSONL lines, the SQLite event log, the websocket hub, and fan-out isolation."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from stream_mmsa.events import (
    ModalityReport,
    Sentiment,
    SentimentEvent,
    StatusEvent,
    TranscriptEvent,
    Window,
    published_schema,
)
from stream_mmsa.sinks import AnyEvent, Sink, SinkGroup
from stream_mmsa.sinks.eventlog import EventLog, SequenceCounter, SequenceError, read_events
from stream_mmsa.sinks.group import SinkFailed
from stream_mmsa.sinks.jsonl import JsonlSink
from stream_mmsa.sinks.websocket import CLOSE_SLOW_CONSUMER, WebSocketHub


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def sentiment(session: str, seq: int, transcript: str = "") -> SentimentEvent:
    return SentimentEvent(
        session=session,
        seq=seq,
        window=Window(start=0.0, end=0.5 * (seq + 1)),
        latency_ms=12.5,
        sentiment=Sentiment(score=0.8, label="positive", confidence=0.6),
        modalities={"audio": ModalityReport(state="present", weight=1.0)},
        transcript=transcript,
    )


def mixed(session: str, counter: SequenceCounter, n: int) -> list[AnyEvent]:
    """Sentiment, transcript and status events of one session, numbered by its counter."""
    events: list[AnyEvent] = []
    for i in range(n):
        seq = counter.next()
        if i % 3 == 0:
            events.append(sentiment(session, seq))
        elif i % 3 == 1:
            events.append(
                TranscriptEvent(session=session, seq=seq, final=True, text="hi", words=[])
            )
        else:
            events.append(
                StatusEvent(session=session, seq=seq, modality="vision", state="missing", since=1.0)
            )
    return events


# --- JSONL --------------------------------------------------------------------------------


def test_jsonl_writes_one_valid_event_per_line(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    events = mixed("s", SequenceCounter(), 5)

    async def main() -> None:
        async with JsonlSink(path) as sink:
            for event in events:
                await sink.send(event)
                assert path.read_text().count("\n") == event.seq + 1  # flushed per line

    run(main())
    validator = Draft202012Validator(published_schema())
    lines = path.read_text().splitlines()
    assert len(lines) == 5
    for line, event in zip(lines, events, strict=True):
        validator.validate(json.loads(line))
        assert line == event.to_json()


def test_jsonl_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        sink = JsonlSink()
        await sink.send(sentiment("s", 0))
        await sink.close()

    run(main())
    assert json.loads(capsys.readouterr().out)["seq"] == 0


# --- fan-out ---------------------------------------------------------------------------


class BrokenSink(Sink):
    def __init__(self) -> None:
        self.closed = False

    async def send(self, event: AnyEvent) -> None:
        raise OSError("disk full")

    async def close(self) -> None:
        self.closed = True
        raise OSError("still full")


def test_sink_group_isolates_a_failing_sink(tmp_path: Path) -> None:
    broken = BrokenSink()
    path = tmp_path / "events.jsonl"

    async def main() -> tuple[SinkGroup, list[SinkFailed]]:
        group = SinkGroup([broken, JsonlSink(path)])
        raised = []
        for seq in range(3):
            try:
                await group.send(sentiment("s", seq))
            except SinkFailed as failed:
                raised.append(failed)
        await group.close()
        return group, raised

    group, raised = run(main())
    assert len(raised) == 1  # the first failure is reported once; the others got the event
    assert "disk full" in str(raised[0])
    assert group.failures == [3, 0]
    assert [(f.error, f.lost) for f in group.failed] == [("disk full", 3)]
    assert broken.closed
    assert len(path.read_text().splitlines()) == 3


# --- event log -------------------------------------------------------------------------


def test_event_log_is_gapless_per_session_and_readable_while_open(tmp_path: Path) -> None:
    path = tmp_path / "log" / "events.db"
    counters = {"a": SequenceCounter(), "b": SequenceCounter()}

    async def main() -> None:
        log = EventLog(path, batch_size=4)
        for _ in range(4):  # interleaved sessions, each with its own gapless numbering
            for session, counter in counters.items():
                for event in mixed(session, counter, 3):
                    await log.send(event)
        await log.flush()
        # A second, independent connection reads while the writer is still open.
        reader = sqlite3.connect(path)
        rows = reader.execute("SELECT session, seq, type FROM events ORDER BY session, seq")
        rows = rows.fetchall()
        reader.close()
        assert [r[1] for r in rows if r[0] == "a"] == list(range(12))
        assert [r[1] for r in rows if r[0] == "b"] == list(range(12))
        assert {r[2] for r in rows} == {"sentiment", "transcript", "status"}
        assert log.sessions() == {"a": 11, "b": 11}
        tail = await asyncio.to_thread(log.read, "a", 9)  # blocking read, off the loop
        assert [(e.seq, e.type) for e in tail] == [(10, "transcript"), (11, "status")]
        await log.close()

    run(main())
    events = read_events(path, "b")
    assert [e.seq for e in events] == list(range(12))
    assert events[0].type == "sentiment" and events[1].type == "transcript"
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_event_log_refuses_gaps_and_repeats(tmp_path: Path) -> None:
    async def main() -> None:
        log = EventLog(tmp_path / "events.db")
        await log.send(sentiment("a", 0))
        with pytest.raises(SequenceError, match=r"gap.*expected 1"):
            await log.send(sentiment("a", 2))
        with pytest.raises(SequenceError, match=r"repeat.*expected 1"):
            await log.send(sentiment("a", 0))
        with pytest.raises(SequenceError, match="gap"):
            await log.send(sentiment("new", 5))
        await log.send(sentiment("a", 1))  # refusals did not move the expectation
        await log.close()
        with pytest.raises(RuntimeError, match="closed"):
            await log.send(sentiment("a", 2))

    run(main())
    assert [e.seq for e in read_events(tmp_path / "events.db", "a")] == [0, 1]
    assert read_events(tmp_path / "events.db", "new") == []


def test_event_log_resumes_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.db"

    async def first_run() -> None:
        log = EventLog(path)
        counter = SequenceCounter()
        for event in mixed("a", counter, 5):
            await log.send(event)
        await log.close()

    async def second_run() -> list[AnyEvent]:
        log = EventLog(path)
        counter = SequenceCounter(log.next_seq("a"))
        assert counter.peek == 5 and log.next_seq("other") == 0
        for event in mixed("a", counter, 3):
            await log.send(event)
        await log.flush()
        resumed = log.read("a", after_seq=4)
        await log.close()
        return resumed

    run(first_run())
    resumed = run(second_run())
    assert [e.seq for e in resumed] == [5, 6, 7]
    assert [e.seq for e in read_events(path, "a", after_seq=2, limit=2)] == [3, 4]


def test_event_log_is_append_only(tmp_path: Path) -> None:
    async def main() -> None:
        log = EventLog(tmp_path / "events.db")
        await log.send(sentiment("a", 0))
        await log.close()

    run(main())
    conn = sqlite3.connect(tmp_path / "events.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM events")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE events SET seq = 9")


def test_event_log_backpressure_keeps_order(tmp_path: Path) -> None:
    async def main() -> None:
        log = EventLog(tmp_path / "events.db", max_pending=8, batch_size=3)
        counter = SequenceCounter()
        await asyncio.gather(*(log.send(e) for e in mixed("a", counter, 100)))
        await log.close()

    run(main())
    assert [e.seq for e in read_events(tmp_path / "events.db", "a")] == list(range(100))


# --- websocket hub ---------------------------------------------------------------------


async def receive_events(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict]:
    return [json.loads(await ws.receive_str(timeout=5)) for _ in range(n)]


def test_websocket_hub_delivers_by_subscription() -> None:
    async def main() -> None:
        hub = WebSocketHub()
        port = await hub.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}/events"
        async with aiohttp.ClientSession() as http:
            everything = await http.ws_connect(url)
            only_b = await http.ws_connect(f"{url}?session=b")
            both = await http.ws_connect(f"{url}?session=a&session=b")
            while hub.clients < 3:
                await asyncio.sleep(0.01)
            for seq in range(3):
                await hub.send(sentiment("a", seq))
                await hub.send(sentiment("b", seq))
                await hub.send(sentiment("c", seq))
            got_all = await receive_events(everything, 9)
            got_b = await receive_events(only_b, 3)
            got_ab = await receive_events(both, 6)
            assert [(e["session"], e["seq"]) for e in got_b] == [("b", 0), ("b", 1), ("b", 2)]
            assert {e["session"] for e in got_ab} == {"a", "b"}
            assert [e["session"] for e in got_all[:3]] == ["a", "b", "c"]
            Draft202012Validator(published_schema()).validate(got_all[0])
            for _ in range(100):  # counted once send_str returns, maybe after delivery
                if hub.sent == 18:
                    break
                await asyncio.sleep(0.01)
            assert hub.sent == 18
            await hub.close()
            msg = await everything.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
            for ws in (everything, only_b, both):
                await ws.close()

    run(main())


def test_websocket_slow_consumer_is_dropped_and_others_are_unaffected() -> None:
    big = "x" * 64_000  # fills socket buffers after a few events

    async def main() -> None:
        hub = WebSocketHub(max_queue=8, close_timeout=10)
        port = await hub.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}/events"
        async with aiohttp.ClientSession() as http:
            fast = await http.ws_connect(url, max_msg_size=0)
            slow = await http.ws_connect(url, max_msg_size=0)  # never reads until dropped
            while hub.clients < 2:
                await asyncio.sleep(0.01)
            received: list[dict] = []
            for seq in range(300):
                await hub.send(sentiment("a", seq, transcript=big))
                received += await receive_events(fast, 1)
                if hub.dropped:
                    break
            assert hub.dropped == 1 and hub.clients == 1
            for seq in range(len(received), len(received) + 5):
                await hub.send(sentiment("a", seq))
            received += await receive_events(fast, 5)
            assert [e["seq"] for e in received] == list(range(len(received)))
            # The slow client finds its backlog, then the close frame with code and reason.
            while (msg := await slow.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
                pass
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == CLOSE_SLOW_CONSUMER
            assert "slow consumer" in msg.extra
            await hub.close()
            for ws in (fast, slow):
                await ws.close()

    run(main())


def test_websocket_vanished_client_is_cleaned_up() -> None:
    handshake = (
        b"GET /events HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )

    async def main() -> None:
        hub = WebSocketHub()
        port = await hub.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(handshake)
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        while hub.clients < 1:
            await asyncio.sleep(0.01)
        writer.transport.abort()  # the client vanishes: no close frame, no goodbye
        for _ in range(500):
            if hub.clients == 0:
                break
            await asyncio.sleep(0.01)
        assert hub.clients == 0
        await hub.send(sentiment("a", 0))  # nothing to deliver to, nothing breaks
        await hub.close()

    run(main())
