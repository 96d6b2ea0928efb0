"""Acoustic stage cost: the session's VAD and the acoustic extractor per audio second.

Compute only, on every chunk of the file decoded beforehand; wall and CPU time are both
reported with the load average (see face.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ..features.acoustic import AcousticExtractor
from ..features.vad import SileroVad, SpeechTrack
from ..media.frames import AudioChunk
from .common import decoded, machine


def benchmark_acoustic(path: str | Path) -> dict:
    """Ms of compute per second of audio over the audio of `path`: the session's VAD (`vad_*`,
    run once per session for ASR and acoustic features alike) and the acoustic extractor on
    the chunks it labelled, as in the engine."""
    chunks: list[AudioChunk] = decoded(path, AudioChunk)
    if not chunks:
        raise ValueError(f"{path} has no audio")
    track = SpeechTrack(SileroVad())
    vad_start, vad_cpu = time.perf_counter(), time.process_time()
    chunks = [track.label(chunk) for chunk in chunks]
    vad_seconds, vad_cpu = time.perf_counter() - vad_start, time.process_time() - vad_cpu

    async def run() -> tuple[float, float, int]:
        extractor = AcousticExtractor()
        start, cpu, steps = time.perf_counter(), time.process_time(), 0
        for chunk in chunks:
            steps += len((await extractor.push(chunk)).vectors)
        steps += len((await extractor.flush()).vectors)
        return time.perf_counter() - start, time.process_time() - cpu, steps

    seconds, cpu, steps = asyncio.run(run())
    audio = sum(chunk.duration for chunk in chunks)
    return {
        "audio_s": round(audio, 2),
        "steps": steps,
        "ms_per_audio_s": round(1000 * seconds / audio, 2),
        "cpu_ms_per_audio_s": round(1000 * cpu / audio, 2),
        "ms_per_chunk": round(1000 * seconds / len(chunks), 3),
        "vad_ms_per_audio_s": round(1000 * vad_seconds / audio, 2),
        "vad_cpu_ms_per_audio_s": round(1000 * vad_cpu / audio, 2),
        **machine(),
    }
