"""Face meshes from the Face Landmarker bundle: two runtimes behind one small contract.

A `Landmarker` takes an RGB frame and its time and returns the face's `FaceMesh` (478
landmarks, 52 blendshape scores, head rotation) or None. Both runtimes run the same three
models of `face_landmarker.task` (BlazeFace short-range detector, the 478-point mesh with
iris, the blendshape network) and track one face: the detector runs only while no face is
tracked, the next frame's region comes from this frame's landmarks.

- `LiteRtLandmarker` (default) runs the models in LiteRT on one thread with the glue
  written here (detector decoding, regions, blendshape input, pose). MediaPipe's graph
  spends ~4 ms a frame around the same models on these cores; without it the face stage
  is 1.3-1.4× faster, at DESIGN.md's 10 ms with the expression classifier on the slower
  host the README's tables were last measured on (`stream-mmsa bench --stages face`).
- `MediaPipeLandmarker` is Google's own graph (`mediapipe.tasks` FaceLandmarker in VIDEO
  mode), the reference the LiteRT runtime is checked against on the bundled sample
  (tests/test_face.py: blendshapes within 0.01 on average, head pose within a few degrees).

The glue follows the models' published interface (face_landmarker graph configuration):
detector input letterboxed to 128×128 in [−1, 1], 896 SSD anchors (strides 8, 16, 16, 16),
sigmoid scores ≥ 0.5, score-weighted merging of boxes overlapping ≥ 0.3 IoU; the face's
region is its box (or its landmarks' box) turned by the eye line and widened 1.5×, warped
to 256×256 in [0, 1] for the mesh; the blendshape network reads 146 of the landmarks in
image pixels. Head pose: a weighted orthogonal Procrustes fit of the canonical face's
landmarks (from the bundle's geometry metadata) to the mesh, under the weak-perspective
view (MediaPipe fits a perspective camera instead: its pitch differs by ~1.5° on the
sample, yaw and roll by < 0.5°).
"""

from __future__ import annotations

import math
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import cv2
import numpy as np

Runtime = Literal["litert", "mediapipe"]

LANDMARKS = 478
BLENDSHAPE_INPUT = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63,
    65, 66, 67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133,
    136, 144, 145, 146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163,
    168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270,
    276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317,
    318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379,
    380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454,
    466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)  # fmt: skip
"""The landmarks the blendshape network reads, in its input order (MediaPipe's subset)."""
EYE_LINE = (33, 263)  # the eyes' outer corners (subject's right, left): the region's turn
DETECTOR_EYES = (0, 1)  # the detector's keypoints for the same eyes
ROI_SCALE = 1.5
MIN_SCORE = 0.5  # detection score, and face presence in the tracked region
MERGE_IOU = 0.3
DETECTOR_SIZE, MESH_SIZE = 128, 256
BUNDLE = (
    "face_detector.tflite",
    "face_landmarks_detector.tflite",
    "face_blendshapes.tflite",
    "geometry_pipeline_metadata_landmarks.binarypb",
)
"""The files of the bundle the LiteRT runtime reads, in the order it reads them."""


class FaceMesh(NamedTuple):
    """One face in one frame."""

    landmarks: np.ndarray  # (478, 3) x/width, y/height, z on x's scale (MediaPipe's units)
    blendshapes: np.ndarray  # (52,) scores in [0, 1], in face.BLENDSHAPES order
    rotation: np.ndarray  # (3, 3) head rotation in the camera frame (x right, y up, z out)


class Landmarker(Protocol):
    """One tracked face per frame; stateful, so one instance per video stream and thread."""

    def __call__(self, image: np.ndarray, at: float) -> FaceMesh | None: ...

    def close(self) -> None: ...


def open_landmarker(bundle: str | Path, runtime: Runtime = "litert") -> Landmarker:
    """The landmarker of `runtime` over the Face Landmarker bundle at `bundle`."""
    if runtime == "litert":
        return LiteRtLandmarker(bundle)
    if runtime == "mediapipe":
        return MediaPipeLandmarker(bundle)
    raise ValueError(f"unknown face runtime {runtime!r}: 'litert' or 'mediapipe'")


class MediaPipeLandmarker:
    """Google's Face Landmarker graph in VIDEO mode (it tracks between frames)."""

    def __init__(self, bundle: str | Path) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(bundle)),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=1,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._last_ts = -1

    def __call__(self, image: np.ndarray, at: float) -> FaceMesh | None:
        import mediapipe as mp

        self._last_ts = max(round(at * 1000), self._last_ts + 1)  # VIDEO mode: strictly rising
        frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        result = self._landmarker.detect_for_video(frame, self._last_ts)
        if not result.face_blendshapes:
            return None
        blendshapes = np.zeros(len(result.face_blendshapes[0]), np.float32)
        for category in result.face_blendshapes[0]:
            blendshapes[category.index] = category.score
        points = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], np.float32)
        rotation = np.asarray(result.facial_transformation_matrixes[0])[:3, :3]
        return FaceMesh(points, blendshapes, rotation / np.linalg.norm(rotation, axis=0))

    def close(self) -> None:
        """Release the graph now: MediaPipe's own finaliser fails at interpreter exit."""
        self._landmarker.close()


class _Model:
    """One LiteRT interpreter on one thread: float32 array in, output arrays by size."""

    def __init__(self, content: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=content, num_threads=1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]

    def __call__(self, x: np.ndarray, scale: float = 1.0, shift: float = 0.0) -> list[np.ndarray]:
        """Outputs for input `x * scale + shift`, written straight into the input tensor."""
        view = self._interpreter.tensor(self._input)()
        np.multiply(x[None], scale, out=view, casting="unsafe")
        if shift:
            view += shift
        del view  # LiteRT refuses to run while a view of its buffers is alive
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i) for i in self._outputs]


class Region(NamedTuple):
    """A square region of the frame turned by `angle` (radians, image y down)."""

    centre: np.ndarray  # (2,) pixels
    size: float  # side, pixels
    angle: float

    def to_image(self, side: int) -> np.ndarray:
        """The 2×3 affine map from a side×side crop of this region to image pixels."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        step = self.size / side
        across, down = np.array([cos, sin]) * step, np.array([-sin, cos]) * step
        origin = self.centre - (across + down) * side / 2
        return np.column_stack([across, down, origin])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -80, 80)))  # float32 exp overflows past 88


def _eye_line_angle(right_eye: np.ndarray, left_eye: np.ndarray) -> float:
    """The turn that makes the line from the subject's right eye to their left horizontal."""
    return math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])


def _anchors() -> np.ndarray:
    """(896, 2) anchor centres of the short-range detector, in [0, 1] of its input."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):  # the three 16-stride layers share one grid
        cells = DETECTOR_SIZE // stride
        grid = (np.stack(np.meshgrid(np.arange(cells), np.arange(cells)), -1) + 0.5) / cells
        centres.append(np.repeat(grid.reshape(-1, 2), per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (cx, cy, w, h) box with many."""
    low = np.maximum(box[:2] - box[2:] / 2, boxes[:, :2] - boxes[:, 2:] / 2)
    high = np.minimum(box[:2] + box[2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    return inter / (np.prod(box[2:]) + np.prod(boxes[:, 2:], axis=1) - inter)


def _protobuf_fields(data: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of a serialised protobuf message: ints for varints, bytes
    for the rest. Enough to read the geometry metadata without its .proto."""
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while i < len(data):
        key = varint()
        kind = key & 7
        if kind == 0:
            yield key >> 3, varint()
            continue
        size = {1: 8, 5: 4}.get(kind)
        if size is None:
            if kind != 2:
                raise ValueError(f"unsupported protobuf wire type {kind}")
            size = varint()
        yield key >> 3, data[i : i + size]
        i += size


def canonical_face(metadata: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From the bundle's geometry_pipeline_metadata_landmarks.binarypb: the canonical face's
    468 vertices (cm; x right, y up, z out) and the Procrustes basis (landmark ids, weights).
    Message layout: 1 canonical_mesh {3: vertex_buffer x,y,z,u,v per vertex}, 2 repeated
    procrustes_landmark_basis {1: landmark_id, 2: weight}."""
    vertices, ids, weights = [], [], []
    for number, value in _protobuf_fields(metadata):
        if number == 1:
            vertices += [struct.unpack("<f", v)[0] for n, v in _protobuf_fields(value) if n == 3]
        elif number == 2:
            basis = dict(_protobuf_fields(value))
            ids.append(basis.get(1, 0))  # proto3 leaves a zero id out
            weights.append(struct.unpack("<f", basis[2])[0])
    mesh = np.asarray(vertices, np.float32).reshape(-1, 5)[:, :3]
    return mesh, np.asarray(ids), np.asarray(weights, np.float32)


class OneEuroFilter:
    """Casiez et al.'s 1€ filter over landmarks, as MediaPipe smooths a tracked face: still
    landmarks barely move (cut-off 0.05 Hz), fast ones follow at once (beta 80), speeds
    measured relative to the face's size so that near and far faces smooth alike. The
    blendshapes and the pose are read from the smoothed landmarks, as MediaPipe reads them
    (without it they differ from MediaPipe's by 0.01 on average on a real MOSI clip)."""

    def __init__(self, min_cutoff: float = 0.05, beta: float = 80.0, speed_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.speed_cutoff = min_cutoff, beta, speed_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the track (the face was lost)."""
        self._at: float | None = None
        self._raw = self._smoothed = self._speed = np.zeros(0)

    @staticmethod
    def _weight(cutoff: np.ndarray | float, rate: float) -> np.ndarray | float:
        """The exponential smoothing weight of a low-pass filter at `cutoff` Hz."""
        return 1 / (1 + rate / (2 * math.pi * cutoff))

    def __call__(self, at: float, points: np.ndarray) -> np.ndarray:
        """Smoothed (N, 3) pixel landmarks for the landmarks seen at `at` seconds."""
        if self._at is None or at <= self._at:
            self._at, self._raw, self._smoothed = at, points, points
            self._speed = np.zeros_like(points)
            return points
        rate = 1 / (at - self._at)
        extent = points[:, :2].max(axis=0) - points[:, :2].min(axis=0)
        speed = (points - self._raw) * rate / max(float(extent.mean()), 1e-6)
        a = self._weight(self.speed_cutoff, rate)
        self._speed = a * speed + (1 - a) * self._speed
        a = self._weight(self.min_cutoff + self.beta * np.abs(self._speed), rate)
        self._smoothed = a * points + (1 - a) * self._smoothed
        self._at, self._raw = at, points
        return self._smoothed


class LiteRtLandmarker:
    """The bundle's models in LiteRT with the tracking glue of the module docstring.

    `last_ms` is not kept here: FaceLandmarks times the whole call.
    """

    def __init__(self, bundle: str | Path) -> None:
        try:
            with zipfile.ZipFile(bundle) as archive:
                detector, mesh, blendshapes, metadata = (archive.read(name) for name in BUNDLE)
        except (zipfile.BadZipFile, KeyError) as error:
            raise ValueError(
                f"{bundle} is not a Face Landmarker bundle (face_landmarker.task holds "
                f"{', '.join(BUNDLE)}): {error}"
            ) from None
        self._detector, self._mesh = _Model(detector), _Model(mesh)
        self._blendshapes = _Model(blendshapes)
        canonical, ids, weights = canonical_face(metadata)
        self._basis, self._weights = ids, weights / weights.sum()
        self._canonical = canonical[ids] - self._weights @ canonical[ids]
        self._anchors = _anchors()
        self._region: Region | None = None
        self._smoother = OneEuroFilter()

    def __call__(self, image: np.ndarray, at: float) -> FaceMesh | None:
        region = self._region or self._detect(image)
        points = None if region is None else self._landmarks(image, region)
        if points is None:
            self._region = None
            self._smoother.reset()
            return None
        self._region = self._region_of(points)
        points = self._smoother(at, points)
        height, width = image.shape[:2]
        (blendshapes,) = self._blendshapes(points[list(BLENDSHAPE_INPUT), :2])
        normalised = points / (width, height, width)
        return FaceMesh(normalised, blendshapes.reshape(-1), self._rotation(points))

    def close(self) -> None:
        """Nothing to release early; LiteRT frees its interpreters with them."""

    def _detect(self, image: np.ndarray) -> Region | None:
        """The most confident face's region, or None."""
        height, width = image.shape[:2]
        scale = DETECTOR_SIZE / max(height, width)
        pad = ((DETECTOR_SIZE - width * scale) / 2, (DETECTOR_SIZE - height * scale) / 2)
        letterbox = np.array([[scale, 0, pad[0]], [0, scale, pad[1]]])
        tensor = cv2.warpAffine(image, letterbox, (DETECTOR_SIZE, DETECTOR_SIZE))
        outputs = self._detector(tensor, 1 / 127.5, -1.0)
        regress, logits = sorted(outputs, key=lambda o: -o.shape[-1])
        scores = _sigmoid(logits.reshape(-1))
        best = int(scores.argmax())
        if scores[best] < MIN_SCORE:
            return None
        raw = regress[0] / DETECTOR_SIZE
        boxes = np.concatenate([raw[:, :2] + self._anchors, raw[:, 2:4]], axis=1)
        keypoints = raw[:, 4:].reshape(len(raw), -1, 2) + self._anchors[:, None]
        merged = (scores >= MIN_SCORE) & (_iou(boxes[best], boxes) >= MERGE_IOU)
        weights = scores[merged] / scores[merged].sum()
        box = weights @ boxes[merged]
        eyes = np.tensordot(weights, keypoints[merged], axes=1)[list(DETECTOR_EYES)]
        # back from the letterboxed input to the frame's pixels
        centre = (box[:2] * DETECTOR_SIZE - pad) / scale
        eyes = (eyes * DETECTOR_SIZE - pad) / scale
        size = float(box[2:].max()) * DETECTOR_SIZE / scale * ROI_SCALE
        return Region(centre, size, _eye_line_angle(*eyes))

    def _landmarks(self, image: np.ndarray, region: Region) -> np.ndarray | None:
        """(478, 3) landmarks in frame pixels (z on x's scale) if a face fills `region`."""
        to_image = region.to_image(MESH_SIZE)
        crop = cv2.warpAffine(image, cv2.invertAffineTransform(to_image), (MESH_SIZE, MESH_SIZE))
        outputs = self._mesh(crop, 1 / 255)
        mesh = next(o for o in outputs if o.size == 3 * LANDMARKS).reshape(LANDMARKS, 3)
        presence = next(o for o in outputs if o.ndim == 4 and o.size == 1)
        if _sigmoid(presence.reshape(())) < MIN_SCORE:
            return None
        points = np.empty_like(mesh)
        points[:, :2] = mesh[:, :2] @ to_image[:, :2].T + to_image[:, 2]
        points[:, 2] = mesh[:, 2] * region.size / MESH_SIZE
        return points

    @staticmethod
    def _region_of(points: np.ndarray) -> Region:
        """The next frame's region: the landmarks' box, turned by the eye line, widened."""
        low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
        angle = _eye_line_angle(points[EYE_LINE[0], :2], points[EYE_LINE[1], :2])
        return Region((low + high) / 2, float((high - low).max()) * ROI_SCALE, angle)

    def _rotation(self, points: np.ndarray) -> np.ndarray:
        """Head rotation: the weighted Procrustes fit of the canonical face to the mesh."""
        seen = points[self._basis] * (1, -1, -1)  # y up, z towards the camera
        seen = seen - self._weights @ seen
        u, _, vt = np.linalg.svd((self._canonical * self._weights[:, None]).T @ seen)
        flip = np.sign(np.linalg.det(vt.T @ u.T))
        return (vt.T * (1, 1, flip)) @ u.T
