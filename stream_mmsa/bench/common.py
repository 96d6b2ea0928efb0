"""What the stage benchmarks share: decoded media, the machine's load, percentiles."""

from __future__ import annotations

import asyncio
import os
import time
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


def host_speed_ms(repeats: int = 15) -> float:
    """Median ms of a fixed one-thread workload (float32 matrix products, as the models do).

    The load average misses what these shared virtual machines lose to their neighbours:
    on one day the same code measured 1.7 and on another 4.6 ms for the fusion model with
    the load below 1. Measured before and after a run, it also shows a host that drifted.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.randn(384, 384, generator=torch.Generator().manual_seed(0))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            b = a
            for _ in range(20):
                b = torch.tanh(b @ a)
            times.append(1000 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
    return round(float(np.median(times)), 2)


def machine() -> dict:
    """The load the figures were taken under: these machines are shared."""
    return {"load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None
