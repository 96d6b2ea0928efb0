"""Cost of the media extractors on a clip, for `stream-mmsa bench` and the README figures.

Both figures are compute only (the landmarker and expression classifier call; the acoustic
extractor's pushes),
measured on every frame or chunk of the file decoded beforehand. Wall time is what
latency sees; CPU time (this process, all threads) is the cost, and moves less when
the machine is shared, so both are reported with the load average.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np

from ..media.frames import AudioChunk, VideoFrame
from ..media.sources.file import FileSource
from .acoustic import AcousticExtractor
from .expression import resolve_expression_model
from .face import FaceLandmarks, resolve_face_model
from .vad import SileroVad, SpeechTrack


async def _frames(path: str | Path, kind: type) -> list:
    source = FileSource(path, realtime=False)
    try:
        return [frame async for frame in source.frames() if isinstance(frame, kind)]
    finally:
        await source.close()


def _machine() -> dict:
    return {"load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def benchmark_face(path: str | Path, model_path: str | Path | None = None) -> dict:
    """Face stage ms per frame over every video frame of `path` (median, p95): landmarker and
    expression classifier together, and the classifier alone on the frames with a face."""
    frames: list[VideoFrame] = asyncio.run(_frames(path, VideoFrame))
    if not frames:
        raise ValueError(f"{path} has no video frames")
    landmarks = FaceLandmarks(resolve_face_model(model_path), resolve_expression_model())
    try:
        landmarks(frames[0].image, frames[0].time)  # graph warm-up, not counted
        costs, cpu, expression = [], [], []
        for frame in frames[1:]:
            start = time.process_time()
            if landmarks(frame.image, frame.time) is not None:
                expression.append(landmarks.expression.last_ms)
            cpu.append(1000 * (time.process_time() - start))
            costs.append(landmarks.last_ms)
    finally:
        landmarks.close()
    return {
        "frames": len(costs),
        "face_ratio": round(len(expression) / len(costs), 3),
        "ms_per_frame_median": round(float(np.median(costs)), 2),
        "ms_per_frame_p95": round(float(np.percentile(costs, 95)), 2),
        "cpu_ms_per_frame_median": round(float(np.median(cpu)), 2),
        "expression_ms_per_face_median": round(float(np.median(expression)), 2),
        "expression_ms_per_face_p95": round(float(np.percentile(expression, 95)), 2),
        **_machine(),
    }


def benchmark_acoustic(path: str | Path) -> dict:
    """Ms of compute per second of audio over the audio of `path`: the session's VAD (`vad_*`,
    run once per session for ASR and acoustic features alike) and the acoustic extractor on
    the chunks it labelled, as in the engine."""
    chunks: list[AudioChunk] = asyncio.run(_frames(path, AudioChunk))
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
        **_machine(),
    }
