"""`stream-mmsa demo`: the bundled sample through the engine, with every sink switched on.

A websocket client subscribes to the engine's own hub and the SQLite log is read
back at the end, so the demo shows that events reach all three sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import aiohttp
from rich.console import Console

from .config import EngineConfig
from .live import run_file
from .paths import SAMPLE
from .sinks.eventlog import list_sessions

OUT = Path("out")


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


def run_demo(console: Console, fast: bool = False) -> None:
    asyncio.run(_demo(console, fast))
