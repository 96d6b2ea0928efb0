"""Face stage cost: landmarker and expression classifier per video frame, for each runtime
of the landmarker (features/face_mesh.py) on the same frames, so their ratio is measured.

Compute only, on every frame of the file decoded beforehand. Wall time is what latency
sees; CPU time (this process, all threads) is the cost, and moves less when the machine
is shared, so both are reported with the load average.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..features.expression import resolve_expression_model
from ..features.face import FaceLandmarks, resolve_face_model
from ..features.face_mesh import Runtime
from ..media.frames import VideoFrame
from .common import decoded, machine


def benchmark_face(
    path: str | Path, model_path: str | Path | None = None, runtime: Runtime = "litert"
) -> dict:
    """Face stage ms per frame over every video frame of `path` (median, p95): landmarker and
    expression classifier together, and the classifier alone on the frames with a face."""
    frames: list[VideoFrame] = decoded(path, VideoFrame)
    if not frames:
        raise ValueError(f"{path} has no video frames")
    landmarks = FaceLandmarks(resolve_face_model(model_path), resolve_expression_model(), runtime)
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
        "runtime": runtime,
        "frames": len(costs),
        "face_ratio": round(len(expression) / len(costs), 3),
        "ms_per_frame_median": round(float(np.median(costs)), 2),
        "ms_per_frame_p95": round(float(np.percentile(costs, 95)), 2),
        "cpu_ms_per_frame_median": round(float(np.median(cpu)), 2),
        "expression_ms_per_face_median": round(float(np.median(expression)), 2),
        "expression_ms_per_face_p95": round(float(np.percentile(expression, 95)), 2),
        **machine(),
    }


def compare_runtimes(path: str | Path, model_path: str | Path | None = None) -> dict:
    """The LiteRT runtime against MediaPipe's graph on every frame of `path`: how often they
    find the same faces, how far apart their blendshapes (absolute), head pose (degrees)
    and expression's top class are, and what each costs a frame (landmarker + expression)."""
    frames: list[VideoFrame] = decoded(path, VideoFrame)
    readings, ms = {}, {}
    for runtime in ("litert", "mediapipe"):
        landmarks = FaceLandmarks(
            resolve_face_model(model_path), resolve_expression_model(), runtime
        )
        try:
            readings[runtime], costs = [], []
            for frame in frames:
                readings[runtime].append(landmarks(frame.image, frame.time))
                costs.append(landmarks.last_ms)
        finally:
            landmarks.close()
        ms[runtime] = round(float(np.median(costs[1:])), 2)
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
