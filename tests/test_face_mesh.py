"""The landmarker runtimes (features/face_mesh.py): the LiteRT glue's parts, and the LiteRT
runtime against MediaPipe's own graph on real video."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from stream_mmsa.bench.face import benchmark_face, compare_runtimes
from stream_mmsa.features.face import resolve_face_model
from stream_mmsa.features.face_mesh import (
    BLENDSHAPE_INPUT,
    LANDMARKS,
    OneEuroFilter,
    Region,
    _anchors,
    canonical_face,
    open_landmarker,
)

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "media" / "sample.mp4"
MOSI_CLIP = SHARED_DATA / "media" / "Oz06ZWiO20M_6.mp4"


def test_detector_anchors_cover_its_grids() -> None:
    anchors = _anchors()
    assert anchors.shape == (896, 2)  # 16×16 cells × 2 + 8×8 cells × 6
    assert anchors.min() == pytest.approx(1 / 32)
    assert anchors.max() == pytest.approx(31 / 32)


def test_blendshape_input_is_146_distinct_landmarks() -> None:
    assert len(BLENDSHAPE_INPUT) == len(set(BLENDSHAPE_INPUT)) == 146
    assert max(BLENDSHAPE_INPUT) == LANDMARKS - 1  # the iris landmarks are read too


def test_canonical_face_reads_the_bundle() -> None:
    with zipfile.ZipFile(resolve_face_model()) as bundle:
        metadata = bundle.read("geometry_pipeline_metadata_landmarks.binarypb")
    mesh, ids, weights = canonical_face(metadata)
    assert mesh.shape == (468, 3)
    assert len(ids) == len(weights) > 20 and ids.max() < 468 and np.all(weights > 0)
    # a face about 15 cm wide and tall, the nose (landmarks 1 and 4) nearest the camera
    assert 10 < np.ptp(mesh[:, 0]) < 20 and 10 < np.ptp(mesh[:, 1]) < 25
    assert int(mesh[:, 2].argmax()) in (1, 4)


def test_region_maps_its_crop_onto_the_turned_square() -> None:
    region = Region(np.array([100.0, 50.0]), 40.0, np.pi / 2)
    to_image = region.to_image(256)
    corners = np.array([[0, 0, 1], [256, 0, 1], [128, 128, 1]], float) @ to_image.T
    # turned a quarter: the crop's top edge runs down the image, its centre stays put
    assert corners[2] == pytest.approx([100, 50])
    assert corners[1] - corners[0] == pytest.approx([0, 40])


def test_one_euro_filter_calms_a_still_face_and_follows_a_moving_one() -> None:
    rng = np.random.default_rng(0)
    face = rng.uniform(100, 300, (LANDMARKS, 3))
    still, jitter = OneEuroFilter(), []
    for i in range(30):
        seen = face + rng.normal(0, 0.5, face.shape)
        jitter.append((seen - face, still(i / 15, seen) - face))
    raw, smoothed = (np.std([j[k] for j in jitter[5:]]) for k in (0, 1))
    assert smoothed < 0.6 * raw
    moving = OneEuroFilter()
    for i in range(8):
        seen = face + np.array([20.0 * i, 0, 0])  # 300 px/s
        lag = np.abs(moving(i / 15, seen) - seen).mean()
    assert lag < 1.0  # against 20 px between frames
    moving.reset()
    assert np.array_equal(moving(1.0, face), face)  # a new track starts where it is seen


def test_a_file_that_is_not_the_bundle_is_refused(tmp_path: Path) -> None:
    not_zip = tmp_path / "face_landmarker.task"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a Face Landmarker bundle"):
        open_landmarker(not_zip)
    partial = tmp_path / "partial.task"
    with zipfile.ZipFile(partial, "w") as archive:
        archive.writestr("face_detector.tflite", b"")
    with pytest.raises(ValueError, match=r"no item named 'face_landmarks_detector\.tflite'"):
        open_landmarker(partial)


def test_a_file_without_video_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    from scipy.io import wavfile

    audio_only = tmp_path / "speech.wav"
    wavfile.write(audio_only, 16000, np.zeros(16000, np.int16))
    for measure in (benchmark_face, compare_runtimes):
        with pytest.raises(ValueError, match="fewer than 2 video frames"):
            measure(audio_only)


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown face runtime"):
        open_landmarker(resolve_face_model(), "onnx")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["sample", "mosi"])
def test_litert_runtime_reads_faces_as_mediapipe_does(clip: str) -> None:
    """Same frames, both runtimes: the same frames have a face, the blendshapes agree to
    about 0.002 (measured: 0.0003 on the sample, 0.0015 on the MOSI clip whose speaker
    moves; 0.009 there without the 1€ smoothing), head pose to about 1.5° (MediaPipe fits a
    perspective camera, the LiteRT glue a weak perspective), the expression's top class on
    nearly every frame (100 %, 98 %)."""
    path = SAMPLE if clip == "sample" else MOSI_CLIP
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared/data)")
    report = compare_runtimes(path)
    assert report["faces_both"] >= 0.98 * report["faces_either"] and report["faces_both"] > 100
    assert report["blendshape_diff_mean"] < 0.005 and report["blendshape_diff_p95"] < 0.02
    assert max(report["pose_diff_deg"].values()) < 3.0
    assert report["same_top_expression"] >= 0.95
