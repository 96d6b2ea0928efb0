"""What the stage benchmarks share: decoded media, the machine's load, percentiles."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..media.sources.file import FileSource


def decoded(path: str | Path, kind: type) -> list:
    """Every `kind` frame or chunk of `path`, decoded beforehand so only compute is timed."""

    async def collect() -> list:
        source = FileSource(path, realtime=False)
        try:
            return [frame async for frame in source.frames() if isinstance(frame, kind)]
        finally:
            await source.close()

    return asyncio.run(collect())


def machine() -> dict:
    """The load the figures were taken under: these machines are shared."""
    return {"load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None
