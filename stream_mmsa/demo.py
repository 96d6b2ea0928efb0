"""`stream-mmsa demo`: the bundled sample through the engine, with every sink switched on.

A websocket client subscribes to the engine's own hub and the SQLite log is read
back at the end, so the demo shows that events reach all three sinks. Then it says what
the engine made of each of the sample's six sentences (three positive, three negative).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from .config import EngineConfig
from .live import run_file
from .paths import SAMPLE
from .sinks.eventlog import list_sessions

OUT = Path("out")
HEARD_S = 1.0
"""A window counts for a sentence once it has heard this much of it..."""
AFTER_S = 0.5
"""...up to this long after the sentence ended (its last words arrive late)."""


@dataclass(frozen=True, slots=True)
class SentenceReading:
    """The mean score of the windows that heard one sentence of the sample."""

    text: str
    polarity: str
    mean: float
    windows: int

    @property
    def agrees(self) -> bool:
        return (self.mean > 0) == (self.polarity == "positive")


def sentence_windows(events: Iterable[dict], sentences: list[dict]) -> list[list[dict]]:
    """Per sentence of a sidecar, the sentiment events whose window ends between HEARD_S
    into it and AFTER_S past its end."""
    windows = [e for e in events if e["type"] == "sentiment"]
    return [
        [e for e in windows if s["start"] + HEARD_S <= e["window"]["end"] <= s["end"] + AFTER_S]
        for s in sentences
    ]


def sentence_scores(events: Iterable[dict], sentences: list[dict]) -> list[list[float]]:
    """Per sentence, the scores of its windows (`sentence_windows`)."""
    return [[e["sentiment"]["score"] for e in w] for w in sentence_windows(events, sentences)]


def sentence_readings(events: Iterable[dict], sentences: list[dict]) -> list[SentenceReading]:
    """Per sentence of the sample's sidecar, the mean score of its windows (`sentence_scores`)."""
    readings = []
    for sentence, scores in zip(sentences, sentence_scores(events, sentences), strict=True):
        mean = sum(scores) / len(scores) if scores else float("nan")
        readings.append(SentenceReading(sentence["text"], sentence["polarity"], mean, len(scores)))
    return readings


def sample_sentences() -> list[dict]:
    """The bundled sample's sentences with their polarity and times (its JSON sidecar)."""
    return json.loads(SAMPLE.with_suffix(".json").read_text())["sentences"]


def readings_table(readings: list[SentenceReading]) -> Table:
    table = Table(title="what the engine said about each sentence of the sample")
    for column in ("sentence", "spoken as", "mean score", "windows", "sign"):
        table.add_column(column)
    for r in readings:
        sign = "[green]right[/]" if r.agrees else "[red]wrong[/]"
        table.add_row(r.text, r.polarity, f"{r.mean:+.2f}", str(r.windows), sign)
    return table


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _count_ws_events(url: str, counter: list[int]) -> None:
    """Subscribe to the hub like any client would (retrying until the server is up)."""
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.ws_connect(url) as ws:
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            counter[0] += 1
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)


async def _demo(console: Console, fast: bool) -> None:
    OUT.mkdir(exist_ok=True)
    db, jsonl = OUT / "demo.sqlite", OUT / "demo-events.jsonl"
    db.unlink(missing_ok=True)
    jsonl.unlink(missing_ok=True)
    port = _free_port()
    received = [0]
    client = asyncio.create_task(_count_ws_events(f"http://127.0.0.1:{port}/events", received))
    await run_file(
        SAMPLE,
        EngineConfig(),
        fast=fast,
        jsonl=str(jsonl),
        ws=f"127.0.0.1:{port}",
        db=db,
        console=console,
    )
    client.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await client
    logged = sum(seq + 1 for seq in list_sessions(db).values())
    console.print(
        f"events: {received[0]} received by a websocket client, {logged} in {db}, "
        f"JSON lines in {jsonl}"
    )
    with jsonl.open() as lines:
        events = [json.loads(line) for line in lines]
    console.print(readings_table(sentence_readings(events, sample_sentences())))


def run_demo(console: Console, fast: bool = False) -> None:
    asyncio.run(_demo(console, fast))
