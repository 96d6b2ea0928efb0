"""`stream-mmsa run`: a media file through the engine, with a live terminal view and a summary."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .config import EngineConfig
from .engine import Runtime, Session, SessionSummary
from .events import SentimentEvent, StatusEvent, TranscriptEvent
from .media.sources.file import FileSource
from .model.types import MODALITIES
from .sinks.base import AnyEvent, Sink
from .sinks.eventlog import EventLog
from .sinks.group import SinkGroup
from .sinks.jsonl import JsonlSink
from .sinks.websocket import WebSocketHub

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
    table.add_row("dropped", ", ".join(f"{k} {v}" for k, v in summary.dropped.items()) or "none")
    table.add_row("transcript", " ".join(summary.transcript)[:300])
    console.print(table)


async def run_file(
    path: Path,
    config: EngineConfig,
    *,
    fast: bool,
    jsonl: str | None,
    ws: str | None,
    db: Path | None,
    console: Console,
) -> SessionSummary:
    """Analyse one media file; events go to the chosen sinks and the live view."""
    sinks: list[Sink] = []
    if jsonl:
        sinks.append(JsonlSink(None if jsonl == "-" else jsonl))
    if db:
        sinks.append(EventLog(db))
    if ws:
        host, _, port = ws.rpartition(":")
        hub = WebSocketHub()
        bound = await hub.start(host or "127.0.0.1", int(port))
        console.print(f"events on ws://{host or '127.0.0.1'}:{bound}/events")
        sinks.append(hub)
    view = LiveView()
    source = FileSource(path, realtime=not fast)
    async with Runtime(config) as runtime, SinkGroup(sinks) as sink:
        session = Session(runtime, source, sink, realtime=not fast, on_event=view.on_event)
        with Live(view.render(), console=console, refresh_per_second=8) as live:
            task = asyncio.create_task(session.run())
            while not task.done():
                await asyncio.wait({task}, timeout=0.125)
                live.update(view.render())
            summary = task.result()
    print_summary(console, summary)
    if db:
        console.print(f"event log: {db}")
    return summary
