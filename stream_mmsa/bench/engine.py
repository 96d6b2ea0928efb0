"""Engine stage: the whole engine on a file at real-time pace, where event latency and
event-loop lag mean something."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from ..config import EngineConfig
from ..model.types import MODALITIES


class LoopLag:
    """Event-loop lag: how late a 10 ms sleep wakes up, sampled for the whole run."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.period)
            self.samples.append((time.perf_counter() - start - self.period) * 1000)


async def bench_engine(path: Path, config: EngineConfig) -> dict:
    """The sample through the engine at real-time pace: event latency and loop lag."""
    from ..engine import Runtime, Session
    from ..media.sources.file import FileSource
    from ..sinks.group import SinkGroup

    lag = LoopLag()
    async with Runtime(config) as runtime, SinkGroup([]) as sink:
        monitor = asyncio.create_task(lag.run())
        session = Session(runtime, FileSource(path, realtime=True), sink, realtime=True)
        summary = await session.run()
        monitor.cancel()
        model_ms = list(runtime.worker.metrics.model_ms)
    return {
        "events": dict(summary.events),
        "latency_p50_ms": summary.latency(50),
        "latency_p95_ms": summary.latency(95),
        "loop_lag_p50_ms": float(np.percentile(lag.samples, 50)),
        "loop_lag_p99_ms": float(np.percentile(lag.samples, 99)),
        "model_ms_per_call_median": float(np.median(model_ms)) if model_ms else None,
        "states": {m: dict(summary.states[m]) for m in MODALITIES},
    }
