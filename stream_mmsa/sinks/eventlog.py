"""The durable event log: an append-only SQLite table that clients resume from.

Why SQLite: one file, no server, and in WAL mode readers (a dashboard, a resuming
client, `sqlite3` on the command line) read while the engine writes. Why one writer
thread: SQLite calls block, so they never run on the event loop; batching many events
per commit keeps the fsync count low at any event rate.

Every session's `seq` is gapless from 0. Numbers are assigned by the session's
SequenceCounter; the log only checks them and refuses a gap or a repeat with
SequenceError, so a log that accepted an event never has holes a client would mistake
for loss.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import sqlite3
import threading
from pathlib import Path

from ..events import parse_event
from .base import AnyEvent, Sink

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Stored in PRAGMA user_version; a log written by another format is refused, not misread."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    session TEXT NOT NULL,
    seq     INTEGER NOT NULL CHECK (seq >= 0),
    type    TEXT NOT NULL,
    ts      TEXT NOT NULL,
    json    TEXT NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
"""
_INSERT = "INSERT INTO events (session, seq, type, ts, json) VALUES (?, ?, ?, ?, ?)"

_Row = tuple[str, int, str, str, str]
_Item = _Row | concurrent.futures.Future[None] | None  # row, flush marker, or stop


class SequenceError(ValueError):
    """An event's seq would leave a gap in, or repeat a number of, its session's log."""


class EventLogError(RuntimeError):
    """The log is closed, or its writer failed (the cause is chained)."""


class SequenceCounter:
    """Gapless seq numbers for one session's events: sentiment, transcript and status alike.

    Owned by the session. To continue a session after a restart, start it at
    `EventLog.next_seq(session)`.
    """

    def __init__(self, start: int = 0) -> None:
        if start < 0:
            raise ValueError("seq starts at 0 or above")
        self._next = start

    @property
    def peek(self) -> int:
        """The seq the next event will get."""
        return self._next

    def next(self) -> int:
        """Take the next seq."""
        seq = self._next
        self._next += 1
        return seq


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def check_format(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a log written by another format (EventLogError): it would be misread."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, FORMAT_VERSION):
        raise EventLogError(f"{path}: log format {version}, expected {FORMAT_VERSION}")


class EventLog(Sink):
    """Appends events to `path`; one EventLog (one writer) per file.

    `send` checks the seq and queues the event for the writer thread, which commits in
    batches of up to `batch_size`. When more than `max_pending` events wait, `send`
    awaits until the writer has caught up: a durable log slows its producer rather than
    dropping events (a drop would be a gap). synchronous=NORMAL in WAL mode: a committed
    event survives a crash of the process; a power cut may lose the last commits.
    """

    def __init__(
        self, path: str | Path, *, max_pending: int = 10_000, batch_size: int = 256
    ) -> None:
        self.path = Path(path)
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        try:
            check_format(conn, self.path)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
            rows = conn.execute("SELECT session, MAX(seq) FROM events GROUP BY session")
            self._next: dict[str, int] = {session: last + 1 for session, last in rows}
        finally:
            conn.close()
        self._file_id = _file_id(self.path)
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._write, name="stream-mmsa-eventlog", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"EventLog({self.path})"

    def next_seq(self, session: str) -> int:
        """The seq the log expects next from `session` (0 for a new one)."""
        return self._next.get(session, 0)

    async def send(self, event: AnyEvent) -> None:
        self._check_open()
        expected = self.next_seq(event.session)
        if event.seq != expected:
            problem = "leave a gap" if event.seq > expected else "repeat a number"
            raise SequenceError(
                f"session {event.session!r}: seq {event.seq} would {problem} in the event log "
                f"(expected {expected})"
            )
        self._next[event.session] = expected + 1
        self._queue.put((event.session, event.seq, event.type, event.emitted_at, event.to_json()))
        if self._queue.qsize() > self.max_pending:
            await self.flush()

    async def flush(self) -> None:
        """Wait until every event sent so far is committed."""
        self._check_open()
        marker: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put(marker)
        await asyncio.wrap_future(marker)

    async def close(self) -> None:
        """Commit what is queued and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise EventLogError(f"{self.path}: writer failed") from self._error

    def read(self, session: str, after_seq: int = -1, limit: int | None = None) -> list[AnyEvent]:
        """Committed events of `session` with seq > after_seq (blocking; see read_events)."""
        return read_events(self.path, session, after_seq, limit)

    def sessions(self) -> dict[str, int]:
        """Each session in the log with its last committed seq (blocking)."""
        return list_sessions(self.path)

    def _check_open(self) -> None:
        if self._error is not None:
            raise EventLogError(f"{self.path}: writer failed") from self._error
        if self._closed:
            raise EventLogError(f"{self.path}: event log is closed")

    def _write(self) -> None:
        """The writer thread: drain the queue, insert and commit in batches."""
        conn = _connect(self.path)
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            stop = False
            while not stop:
                items = [self._queue.get()]
                while len(items) < self.batch_size:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                batch = [item for item in items if isinstance(item, tuple)]
                if batch and self._error is None:
                    try:
                        with conn:
                            conn.executemany(_INSERT, batch)
                        if _file_id(self.path) != self._file_id:
                            raise EventLogError(f"{self.path} was removed or replaced")
                    except Exception as error:  # any failure must reach senders, not hang them
                        self._error = error
                        log.error("event log %s: commit failed: %r", self.path, error)
                for item in items:
                    if isinstance(item, concurrent.futures.Future):
                        if self._error is None:
                            item.set_result(None)
                        else:
                            item.set_exception(EventLogError(f"{self.path}: writer failed"))
                    elif item is None:
                        stop = True
        finally:
            conn.close()


def read_events(
    path: str | Path, session: str, after_seq: int = -1, limit: int | None = None
) -> list[AnyEvent]:
    """Committed events of `session` with seq > after_seq, in seq order.

    Opens its own connection, so it works from any thread or process while a writer is
    running. Blocking: from the event loop, call it via asyncio.to_thread.
    """
    conn = _reader(path)
    try:
        rows = conn.execute(
            "SELECT json FROM events WHERE session = ? AND seq > ? ORDER BY seq LIMIT ?",
            (session, after_seq, -1 if limit is None else limit),
        ).fetchall()
    finally:
        conn.close()
    return [parse_event(text) for (text,) in rows]


def list_sessions(path: str | Path) -> dict[str, int]:
    """Each session in the log at `path` with its last committed seq (blocking)."""
    conn = _reader(path)
    try:
        return dict(conn.execute("SELECT session, MAX(seq) FROM events GROUP BY session"))
    finally:
        conn.close()


def _file_id(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now: SQLite writes on into a deleted file without an error."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _reader(path: str | Path) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no event log at {path}")
    return _connect(Path(path))
