"""`stream-mmsa serve` as a real process for the tests that need one (server and page)."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from conftest import TOKEN


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, url: str, db: Path, process: subprocess.Popen, log: Path) -> None:
        self.url, self.db, self.process, self.log = url, db, process, log

    def get(self, path: str) -> dict:
        async def fetch() -> dict:
            async with aiohttp.ClientSession() as http, http.get(self.url + path) as response:
                return await response.json()

        return asyncio.run(fetch())


@contextmanager
def serve(tmp: Path, *options: str) -> Iterator[Server]:
    """The server with TOKEN and its own port and event log; it must stop cleanly (exit 0)."""
    port, db, log = free_port(), tmp / "events.sqlite", tmp / "server.log"
    command = [
        str(Path(sys.executable).parent / "stream-mmsa"),
        "serve",
        f"--port={port}",
        f"--token={TOKEN}",
        f"--db={db}",
        *options,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    srv = Server(f"http://127.0.0.1:{port}", db, process, log)
    deadline = time.monotonic() + 120
    while True:
        try:
            srv.get("/healthz")
            break
        except aiohttp.ClientError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()}") from None
            time.sleep(0.5)
    yield srv
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)  # the server prints every thread's stack
        time.sleep(2)
        process.kill()
        raise AssertionError(f"server did not stop in 30 s:\n{log.read_text()[-6000:]}") from None
    assert process.returncode == 0, log.read_text()[-3000:]
