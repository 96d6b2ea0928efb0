"""JSON Lines: one event per line, flushed per line, to a file or stdout."""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .base import AnyEvent, Sink


class JsonlSink(Sink):
    """Appends events to `path`, or writes them to stdout when no path is given.

    Writes run in one dedicated thread, in send order: a stdout piped into a slow reader
    blocks that thread, never the event loop. Each send waits for its line, which is the
    backpressure that keeps the sink bounded.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8") if self.path else sys.stdout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-mmsa-jsonl")

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path) if self.path else 'stdout'})"

    async def send(self, event: AnyEvent) -> None:
        line = event.to_json() + "\n"
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write, line)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_file)
        self._executor.shutdown(wait=False)

    def _write(self, line: str) -> None:
        self._file.write(line)
        self._file.flush()

    def _close_file(self) -> None:
        if self._file is sys.stdout:
            self._file.flush()
        else:
            self._file.close()
