"""Memory over a long session: resident set size against media time, flat after warm-up.

    .venv/bin/python benchmarks/bench_memory.py [--speech-minutes 20] [--quiet-minutes 60]

Two runs through the real engine (as fast as possible, events to an SQLite log, like
`stream-mmsa run --fast --db`):
- speech: the bundled sample played back to back (speech, face, silence, no face) for
  `--speech-minutes` of media, so the recogniser, the face and the model all work;
- quiet: `--quiet-minutes` of the sample's video with low room noise for audio, the cheap
  way to reach an hour of session time on two cores (no speech: the recogniser idles).
RSS is read from /proc every few seconds of wall time. Writes docs/memory.md (the table,
with the command and the machine's load) and docs/memory.png (RSS over media time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import matplotlib
import numpy as np

from stream_mmsa.config import EngineConfig
from stream_mmsa.engine import Runtime, Session
from stream_mmsa.media.frames import AudioChunk, Frame, VideoFrame
from stream_mmsa.media.sources.base import Source
from stream_mmsa.media.sources.file import FileSource
from stream_mmsa.sinks.eventlog import EventLog

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "media" / "sample.mp4"
WARMUP = 0.5
"""Share of the run treated as warm-up: the recogniser's and encoders' allocator caches
fill for each new window length they meet, which takes minutes of speech."""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Looped(Source):
    """The sample back to back until `seconds` of media; `quiet` swaps its audio for noise."""

    def __init__(self, seconds: float, quiet: bool = False) -> None:
        self.name, self.has_audio, self.has_video = "looped-sample", True, True
        self.seconds, self.quiet = seconds, quiet
        self.position = 0.0
        self._noise = np.random.default_rng(0)

    async def frames(self) -> AsyncIterator[Frame]:
        offset = 0.0
        while offset < self.seconds:
            lap = FileSource(SAMPLE, realtime=False)
            end = offset
            try:
                async for frame in lap.frames():
                    t = frame.time + offset
                    if t >= self.seconds:
                        return
                    self.position = t
                    if isinstance(frame, AudioChunk):
                        samples = frame.samples
                        if self.quiet:
                            samples = self._noise.normal(0, 1e-3, len(samples)).astype(np.float32)
                        end = max(end, t + frame.duration)
                        yield AudioChunk(samples, t)
                    else:
                        yield VideoFrame(frame.image, t)
            finally:
                await lap.close()
            offset = end + 0.04


async def measure(seconds: float, quiet: bool, db: Path) -> dict:
    source = Looped(seconds, quiet)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(2.0):
            samples.append((source.position, rss_mb()))

    async with Runtime(EngineConfig()) as runtime, EventLog(db) as log:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        summary = await Session(runtime, source, log, realtime=False).run()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    media = np.array([m for m, _ in samples])
    rss = np.array([r for _, r in samples])
    steady = media >= WARMUP * seconds
    slope = np.polyfit(media[steady] / 3600, rss[steady], 1)[0] if steady.sum() > 2 else np.nan
    return {
        "name": "quiet" if quiet else "speech",
        "media_s": summary.duration,
        "wall_s": wall,
        "events": sum(summary.events.values()),
        "ok": summary.ok,
        "rss_after_warmup": float(rss[steady][0]) if steady.any() else float("nan"),
        "rss_end": float(rss[-1]),
        "rss_peak": float(rss.max()),
        "slope_mb_per_h": float(slope),
        "trace": samples,
    }


def report(runs: list[dict], command: str, load: tuple[float, float, float]) -> str:
    lines = [
        "# Memory over a long session",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')}; load average before: "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores). The engine, `--fast`, events "
        "to an SQLite log; RSS of the whole process (models included).",
        "",
        "| run | media | wall | events | RSS at half time | RSS at end | peak | "
        "trend over the second half |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run['name']} | {run['media_s'] / 60:.1f} min | {run['wall_s'] / 60:.1f} min | "
            f"{run['events']} | {run['rss_after_warmup']:.0f} MB | {run['rss_end']:.0f} MB | "
            f"{run['rss_peak']:.0f} MB | {run['slope_mb_per_h']:+.1f} MB per media hour |"
        )
    lines += ["", "![RSS over media time](memory.png)", ""]
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for run in runs:
        trace = np.array(run["trace"])
        ax.plot(trace[:, 0] / 60, trace[:, 1], label=run["name"])
    ax.set_xlabel("media time (min)")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speech-minutes", type=float, default=20.0)
    parser.add_argument("--quiet-minutes", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "memory.md")
    args = parser.parse_args()
    load = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes, quiet in ((args.speech_minutes, False), (args.quiet_minutes, True)):
            if minutes > 0:
                run = asyncio.run(measure(minutes * 60, quiet, Path(tmp) / f"{quiet}.sqlite"))
                print(f"{run['name']}: {run['rss_after_warmup']:.0f} → {run['rss_end']:.0f} MB")
                runs.append(run)
    command = (
        "python benchmarks/bench_memory.py "
        f"--speech-minutes {args.speech_minutes:g} --quiet-minutes {args.quiet_minutes:g}"
    )
    args.out.write_text(report(runs, command, load))
    plot(runs, args.out.with_suffix(".png"))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
