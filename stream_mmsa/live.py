"""`stream-mmsa run`: a media file or local devices through the engine, live view, summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .config import EngineConfig
from .console import print_error
from .engine import Runtime, Session, SessionSummary
from .events import SentimentEvent, StatusEvent, TranscriptEvent
from .media.sources.base import Source
from .media.sources.file import FileSource
from .model.types import MODALITIES
from .sinks.base import AnyEvent, Sink
from .sinks.eventlog import EventLog
from .sinks.group import SinkGroup
from .sinks.jsonl import JsonlSink
from .sinks.websocket import WebSocketHub
from .validate import parse_ws_address

STATE_STYLE = {"present": "green", "partial": "yellow", "late": "magenta", "missing": "red"}


class LiveView:
    """The last events of a session, redrawn as they arrive."""

    def __init__(self) -> None:
        self.sentiments: deque[SentimentEvent] = deque(maxlen=8)
        self.statuses: deque[StatusEvent] = deque(maxlen=6)
        self.final_text = ""
        self.interim = ""

    def on_event(self, event: AnyEvent) -> None:
        if isinstance(event, SentimentEvent):
            self.sentiments.append(event)
        elif isinstance(event, StatusEvent):
            self.statuses.append(event)
        elif isinstance(event, TranscriptEvent):
            if event.final:
                self.final_text = (self.final_text + " " + event.text).strip()[-160:]
                self.interim = ""
            else:
                self.interim = event.text

    def render(self) -> Group:
        table = Table(expand=True, title="sentiment per window")
        for column in ("window", "score", "label", "conf", *MODALITIES, "ms"):
            table.add_column(column)
        for e in self.sentiments:
            cells = [f"{e.window.start:5.1f}–{e.window.end:5.1f}", f"{e.sentiment.score:+.2f}"]
            cells += [e.sentiment.label, f"{e.sentiment.confidence:.2f}"]
            for m in MODALITIES:
                r = e.modalities[m]
                tag = f"[{STATE_STYLE[r.state]}]{r.state}[/]"
                cells.append(tag if r.action == "used" else f"{tag} ({r.action})")
            table.add_row(*cells, f"{e.latency_ms:.0f}")
        status = Text("  ".join(f"{s.modality}→{s.state} @{s.since:.1f}s" for s in self.statuses))
        words = Text(self.final_text, style="bold")
        words.append(" " + self.interim, style="dim")
        return Group(table, Text("status: ", style="bold") + status, Text("text: ") + words)


def print_summary(console: Console, summary: SessionSummary) -> None:
    table = Table(title=f"session {summary.session}: {summary.duration:.1f} s of media")
    table.add_column("what")
    table.add_column("value")
    events = ", ".join(f"{k} {v}" for k, v in sorted(summary.events.items()))
    table.add_row("events", events)
    table.add_row(
        "latency after window end",
        f"p50 {summary.latency(50):.0f} ms · p95 {summary.latency(95):.0f} ms",
    )
    for m in MODALITIES:
        counts = summary.states[m]
        total = sum(counts.values()) or 1
        shares = " · ".join(f"{s} {100 * counts[s] / total:.0f}%" for s in STATE_STYLE if counts[s])
        table.add_row(f"{m} availability", shares)
    dropped = ", ".join(f"{k} {v:g}" for k, v in summary.dropped.items() if v)
    table.add_row("dropped", dropped or "none")
    last = tail(summary.transcript, 300)
    table.add_row("transcript", Text(f"{summary.words} words; last: {last}"))
    table.add_row("ended", Text(summary.ended))
    for failure in summary.sink_failures:
        table.add_row(Text("sink failed", style="bold red"), Text(failure.describe()))
    console.print(table)


def tail(words: Iterable[str], chars: int) -> str:
    text = " ".join(words)
    return text if len(text) <= chars else "…" + text[-chars:]


def exit_code(summary: SessionSummary) -> int:
    """0: analysed to the end, every event delivered; 1: a part failed or a sink lost
    events; 128 + signal number when stopped by a signal (as shells report it)."""
    if summary.error is not None or summary.sink_failures:
        return 1
    if summary.signal is not None:
        return 128 + summary.signal
    return 0


async def file_events(
    config: EngineConfig,
    path: Path,
    realtime: bool,
    on_event: Callable[[AnyEvent], None] | None = None,
) -> list[dict]:
    """Every event of one media file through a session with no sinks, as the JSON objects
    sinks write (what the sample's and the continuous talk's readings are computed from);
    `on_event` sees each one as it comes. A session that ends in error raises it."""
    events: list[dict] = []

    def keep(event: AnyEvent) -> None:
        events.append(json.loads(event.to_json()))
        if on_event is not None:
            on_event(event)

    async with Runtime(config) as runtime, SinkGroup([]) as sink:
        source = FileSource(path, realtime=realtime)
        summary = await Session(runtime, source, sink, realtime=realtime, on_event=keep).run()
    if summary.error is not None:
        raise summary.error
    return events


async def run_file(
    source: Path | Callable[[], Source],
    config: EngineConfig,
    *,
    fast: bool,
    jsonl: str | None,
    ws: str | None,
    db: Path | None,
    console: Console,
) -> SessionSummary:
    """Analyse one media file, or the live source `source()` makes once the models are in
    (so that its clock starts with the session); events go to the sinks and the live view."""
    sinks: list[Sink] = []
    if jsonl:
        sinks.append(JsonlSink(None if jsonl == "-" else jsonl))
    if db:
        sinks.append(EventLog(db))
    if ws:
        host, port = parse_ws_address(ws)
        hub = WebSocketHub()
        bound = await hub.start(host, port)
        console.print(f"events on ws://{host}:{bound}/events", markup=False)
        sinks.append(hub)
    view = LiveView()
    file = None if callable(source) else FileSource(source, realtime=not fast)  # fails early
    group = SinkGroup(sinks)
    async with Runtime(config) as runtime, group:
        media = source() if callable(source) else file
        session = Session(runtime, media, group, realtime=not fast, on_event=view.on_event)
        with (
            Live(view.render(), console=console, refresh_per_second=8) as live,
            on_signals(session, console),
        ):
            task = asyncio.create_task(session.run())
            while not task.done():
                await asyncio.wait({task}, timeout=0.125)
                live.update(view.render())
            summary = task.result()
    summary.sink_failures = group.failed  # closing may fail too (the log's last commit)
    print_summary(console, summary)
    for failure in summary.sink_failures:
        print_error(console, f"sink {failure.describe()}")
    if summary.error is not None:
        print_error(console, f"session {summary.ended}")
    if summary.signal is not None:
        console.print(f"stopped by signal {signal.Signals(summary.signal).name}")
    if db:
        console.print(f"event log: {db}", markup=False)
    return summary


@contextlib.contextmanager
def on_signals(session: Session, console: Console) -> Iterator[None]:
    """SIGTERM / SIGINT drain the session (stop reading, close windows, flush sinks);
    a second signal while draining stops at once."""
    loop = asyncio.get_running_loop()
    caught = (signal.SIGTERM, signal.SIGINT)

    def handle(number: signal.Signals) -> None:
        if session.summary.signal is not None:
            raise KeyboardInterrupt  # a second signal: the user does not want to wait
        session.summary.signal = int(number)
        console.print(f"{number.name}: stopping, finishing the open windows and flushing sinks…")
        session.stop(f"signal {number.name}")

    for number in caught:
        loop.add_signal_handler(number, handle, number)
    try:
        yield
    finally:
        for number in caught:
            loop.remove_signal_handler(number)
