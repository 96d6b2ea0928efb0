"""Face stage cost: landmarker and expression classifier per video frame, for each runtime
of the landmarker (features/face_mesh.py) on the same frames, so their ratio is measured.

Compute only, on every frame of the file decoded beforehand. Wall time is what latency
sees; CPU time (this process, all threads) is the cost, and moves less when the machine
is shared, so both are reported with the load average.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..features.expression import resolve_expression_model
from ..features.face import FaceLandmarks, FaceReading, resolve_face_model
from ..features.face_mesh import Runtime
from ..media.frames import VideoFrame
from .common import decoded, machine


@dataclass
class _Pass:
    """One runtime over every frame, in frame order; the first frame warms the graph up, so
    costs are counted from the second (`counted`)."""

    readings: list[FaceReading | None] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)  # landmarker + expression (wall)
    cpu_ms: list[float] = field(default_factory=list)  # this process, all threads
    expression_ms: list[float | None] = field(default_factory=list)  # None: no face

    def counted(self, values: list) -> list:
        return [v for v in values[1:] if v is not None]


def _run(frames: list[VideoFrame], runtime: Runtime, model_path: str | Path | None) -> _Pass:
    landmarks = FaceLandmarks(resolve_face_model(model_path), resolve_expression_model(), runtime)
    run = _Pass()
    try:
        for frame in frames:
            start = time.process_time()
            reading = landmarks(frame.image, frame.time)
            run.cpu_ms.append(1000 * (time.process_time() - start))
            run.ms.append(landmarks.last_ms)
            run.readings.append(reading)
            run.expression_ms.append(None if reading is None else landmarks.expression.last_ms)
    finally:
        landmarks.close()
    return run


def benchmark_face(
    path: str | Path, model_path: str | Path | None = None, runtime: Runtime = "litert"
) -> dict:
    """Face stage ms per frame over every video frame of `path` (median, p95): landmarker and
    expression classifier together, and the classifier alone on the frames with a face."""
    frames: list[VideoFrame] = decoded(path, VideoFrame)
    if len(frames) < 2:
        raise ValueError(f"{path} has fewer than 2 video frames")
    run = _run(frames, runtime, model_path)
    costs, expression = run.counted(run.ms), run.counted(run.expression_ms)
    return {
        "runtime": runtime,
        "frames": len(costs),
        "face_ratio": round(len(expression) / len(costs), 3),
        "ms_per_frame_median": round(float(np.median(costs)), 2),
        "ms_per_frame_p95": round(float(np.percentile(costs, 95)), 2),
        "cpu_ms_per_frame_median": round(float(np.median(run.counted(run.cpu_ms))), 2),
        "expression_ms_per_face_median": round(float(np.median(expression)), 2),
        "expression_ms_per_face_p95": round(float(np.percentile(expression, 95)), 2),
        **machine(),
    }


def compare_runtimes(path: str | Path, model_path: str | Path | None = None) -> dict:
    """The LiteRT runtime against MediaPipe's graph on every frame of `path`: how often they
    find the same faces, how far apart their blendshapes (absolute), head pose (degrees)
    and expression's top class are, and what each costs a frame (landmarker + expression)."""
    frames: list[VideoFrame] = decoded(path, VideoFrame)
    if len(frames) < 2:
        raise ValueError(f"{path} has fewer than 2 video frames")
    runs = {runtime: _run(frames, runtime, model_path) for runtime in ("litert", "mediapipe")}
    ms = {name: round(float(np.median(run.counted(run.ms))), 2) for name, run in runs.items()}
    readings = {name: run.readings for name, run in runs.items()}
    pairs = list(zip(readings["litert"], readings["mediapipe"], strict=True))
    both = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not both:
        raise ValueError(f"no frame of {path} has a face for both runtimes")
    blendshapes = np.array([np.abs(a.vector[:52] - b.vector[:52]) for a, b in both])
    pose = np.degrees([np.abs(a.vector[52:] - b.vector[52:]) for a, b in both]).mean(axis=0)
    return {
        "clip": Path(path).name,
        "frames": len(frames),
        "faces_both": len(both),
        "faces_either": sum(a is not None or b is not None for a, b in pairs),
        "blendshape_diff_mean": round(float(blendshapes.mean()), 4),
        "blendshape_diff_p95": round(float(np.percentile(blendshapes, 95)), 4),
        "pose_diff_deg": dict(
            zip(("yaw", "pitch", "roll"), np.round(pose, 2).tolist(), strict=True)
        ),
        "same_top_expression": round(
            float(np.mean([a.expression.argmax() == b.expression.argmax() for a, b in both])), 3
        ),
        "ms_per_frame": ms,
    }
