"""Local devices as a live source: a camera through OpenCV, a microphone through PortAudio.

`stream-mmsa run webcam`, `mic` or `webcam+mic` (`webcam:1`, `mic:"USB Audio"`). Devices
are opened before the models load, so a missing one fails at once with one line; the
source wrapping them is made when the session starts, so its clock starts with the
session. Each device is read by its own thread with blocking reads; frames reach a
PushSource on the event loop (`call_soon_threadsafe`), which stamps them on arrival and
bounds what waits, exactly like pushed or WebRTC media. A device that fails mid-session
(unplugged) stops alone: its frames stop (the modality reads `late` from then on), the loss
is reported (`degraded`), and the session goes on with the other; the source ends when its
last device does.

Everything device-specific is behind `Backend` (the real one: `SystemDevices`), so the
rest is tested with recorded frames on machines without a camera or microphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from ..frames import Frame
from .base import Source, SourceError
from .push import PushSource

log = logging.getLogger(__name__)

JOIN_S = 2.0
"""How long close() waits for a capture thread blocked in a read (a frozen device)."""

PORTAUDIO_MISSING = (
    "no microphone available: the PortAudio library is missing (sounddevice needs it); "
    "apt-get install libportaudio2"
)


@dataclass(frozen=True)
class DeviceInfo:
    """One camera or microphone as listed and selected: `index` is what `webcam:N` takes."""

    index: int
    name: str
    detail: str = ""
    default: bool = False


class Camera(Protocol):
    def read(self) -> np.ndarray:
        """The next RGB uint8 image (H, W, 3); blocks until it comes; raises once the
        device is gone."""
        ...

    def close(self) -> None: ...


class Microphone(Protocol):
    sample_rate: int
    overflows: int
    """Blocks the device lost because they were not read in time."""

    def read(self) -> np.ndarray:
        """The next block of samples (int16 or float32, mono or (n, 2)); blocks; raises
        once the device is gone."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Lists and opens devices; list and open errors are SourceError with one line."""

    def cameras(self) -> list[DeviceInfo]: ...

    def microphones(self) -> list[DeviceInfo]: ...

    def open_camera(self, device: DeviceInfo) -> Camera: ...

    def open_microphone(self, device: DeviceInfo) -> Microphone: ...


@dataclass(frozen=True)
class DeviceSpec:
    """The devices `run` was given; `*_at` None means the system's default device."""

    webcam: bool = False
    webcam_at: int | str | None = None
    mic: bool = False
    mic_at: int | str | None = None


_PART = r'(webcam|mic)(?::("[^"]*"|[^+"]*))?'


def parse_device_spec(text: str) -> DeviceSpec | None:
    """`webcam`, `mic:2`, `webcam:1+mic:"USB Audio"` as a DeviceSpec; None when `text`
    does not name a device (a file path); ValueError when it does but is malformed."""
    if not re.match(r"(webcam|mic)(:|\+|$)", text):
        return None
    match = re.fullmatch(rf"{_PART}(?:\+{_PART})?", text)
    if match is None or match.group(1) == match.group(3):
        raise ValueError(
            f"{text!r}: expected webcam, mic or webcam+mic, each with an optional "
            '":INDEX" or ":NAME" (webcam:1, mic:"USB Audio")'
        )
    wanted: dict[str, Any] = {}
    for kind, at in (match.group(1, 2), match.group(3, 4)):
        if kind is not None:
            at = (at or "").strip('"').strip()
            wanted[kind] = True
            wanted[f"{kind}_at"] = int(at) if at.isdigit() else at or None
    return DeviceSpec(**wanted)


class SystemDevices:
    """The machine's cameras (OpenCV; named through sysfs on Linux) and microphones
    (PortAudio through sounddevice, imported only when a microphone is asked for)."""

    PROBE = 5
    """Camera indices tried where the OS gives no list (not Linux): OpenCV cannot enumerate."""

    def cameras(self) -> list[DeviceInfo]:
        found = []
        if sys.platform.startswith("linux"):
            for node in sorted(Path("/sys/class/video4linux").glob("video*")):
                if _read(node / "index") not in ("0", ""):
                    continue  # a device's second node (metadata), not a capture stream
                index = int(node.name.removeprefix("video"))
                found.append(
                    DeviceInfo(index, _read(node / "name") or node.name, f"/dev/{node.name}")
                )
        else:
            cv2 = _cv2()
            for index in range(self.PROBE):
                capture = cv2.VideoCapture(index)
                opened = capture.isOpened()
                capture.release()
                if not opened:
                    break
                found.append(DeviceInfo(index, f"camera {index}"))
        return [DeviceInfo(d.index, d.name, d.detail, default=i == 0) for i, d in enumerate(found)]

    def microphones(self) -> list[DeviceInfo]:
        sd = _sounddevice()
        try:
            default = sd.default.device[0]
            apis = sd.query_hostapis()
            return [
                DeviceInfo(
                    d["index"],
                    d["name"],
                    f"{apis[d['hostapi']]['name']}, {d['default_samplerate']:g} Hz",
                    default=d["index"] == default,
                )
                for d in sd.query_devices()
                if d["max_input_channels"] > 0
            ]
        except sd.PortAudioError as error:
            raise SourceError("mic", f"cannot list microphones: {error}") from None

    def open_camera(self, device: DeviceInfo) -> Camera:
        return _CvCamera(_cv2(), device)

    def open_microphone(self, device: DeviceInfo) -> Microphone:
        return _SdMicrophone(_sounddevice(), device)


class _CvCamera:
    def __init__(self, cv2: ModuleType, device: DeviceInfo) -> None:
        self._cv2 = cv2
        self._capture = cv2.VideoCapture(device.index)
        if not self._capture.isOpened():
            raise SourceError("webcam", f"camera {device.index} ({device.name}) cannot be opened")

    def read(self) -> np.ndarray:
        ok, bgr = self._capture.read()
        if not ok:
            raise OSError("the camera stopped delivering frames")
        return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._capture.release()


class _SdMicrophone:
    """Blocking reads of 20 ms; the stream starts on the first read, with the session."""

    def __init__(self, sd: ModuleType, device: DeviceInfo) -> None:
        info = sd.query_devices(device.index)
        self.sample_rate = int(info["default_samplerate"])
        self.overflows = 0
        self._block = self.sample_rate // 50
        try:
            self._stream = sd.InputStream(
                device=device.index, channels=1, samplerate=self.sample_rate, dtype="float32"
            )
        except sd.PortAudioError as error:
            raise SourceError("mic", f"{device.name} cannot be opened: {error}") from None

    def read(self) -> np.ndarray:
        if not self._stream.active:
            self._stream.start()
        samples, overflowed = self._stream.read(self._block)
        self.overflows += bool(overflowed)
        return samples

    def close(self) -> None:
        self._stream.close()


def _cv2() -> ModuleType:
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # one error line, ours
    return cv2


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except OSError:  # raised at import when the PortAudio shared library is absent
        raise SourceError("mic", PORTAUDIO_MISSING) from None
    return sounddevice


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


BACKEND: Backend = SystemDevices()
"""The devices `run` uses (tests replace it)."""


def _pick(where: str, what: str, devices: list[DeviceInfo], at: int | str | None) -> DeviceInfo:
    """The device `at` names: an index, part of a name (case-insensitive) or None (default)."""
    listed = "; ".join(f"{d.index}: {d.name}" for d in devices)
    if not devices:
        raise SourceError(where, f"no {what} found")
    if at is None:
        return next((d for d in devices if d.default), devices[0])
    if isinstance(at, int):
        chosen = [d for d in devices if d.index == at]
    else:
        chosen = [d for d in devices if at.lower() in d.name.lower()]
        chosen = [d for d in chosen if d.name.lower() == at.lower()] or chosen
    if len(chosen) == 1:
        return chosen[0]
    how = "matches several" if chosen else "matches none"
    raise SourceError(where, f"{what} {at!r} {how} of: {listed}")


@dataclass
class Devices:
    """Opened devices, not yet read; DeviceSource reads them."""

    camera: Camera | None
    microphone: Microphone | None
    name: str

    def close(self) -> None:
        for device in (self.camera, self.microphone):
            if device is not None:
                device.close()


def open_devices(spec: DeviceSpec, backend: Backend | None = None) -> Devices:
    """Open what `spec` asks for, or raise SourceError saying which device is missing."""
    backend = backend or BACKEND
    camera = microphone = None
    names = []
    try:
        if spec.webcam:
            info = _pick("webcam", "camera", backend.cameras(), spec.webcam_at)
            camera = backend.open_camera(info)
            names.append(f"webcam:{info.name}")
        if spec.mic:
            info = _pick("mic", "microphone", backend.microphones(), spec.mic_at)
            microphone = backend.open_microphone(info)
            names.append(f"mic:{info.name}")
    except BaseException:
        if camera is not None:
            camera.close()
        raise
    return Devices(camera, microphone, "+".join(names))


def list_devices(backend: Backend | None = None) -> str:
    """The cameras and microphones `webcam:N` / `mic:N` can name, one a line ('*' default)."""
    backend = backend or BACKEND
    lines = []
    for title, listing in (("cameras", backend.cameras), ("microphones", backend.microphones)):
        try:
            devices = listing()
        except SourceError as error:
            lines.append(f"{title}: {error.reason}")
            continue
        lines.append(f"{title}:" if devices else f"{title}: none found")
        for d in devices:
            detail = f"  ({d.detail})" if d.detail else ""
            lines.append(f"  {'*' if d.default else ' '} {d.index}: {d.name}{detail}")
    return "\n".join(lines)


class DeviceSource(Source):
    """Frames from opened devices, stamped on arrival on the session clock (from now).

    `max_buffer_s`: seconds of audio held for an engine that falls behind (PushSource's).
    """

    def __init__(self, devices: Devices, *, max_buffer_s: float = 10.0) -> None:
        self.devices = devices
        self.name = devices.name
        self.has_audio = devices.microphone is not None
        self.has_video = devices.camera is not None
        self._push = PushSource(
            audio=self.has_audio, video=self.has_video, name=self.name, max_buffer_s=max_buffer_s
        )
        self.origin = self._push.origin
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lost: dict[str, float] = {}
        self._stopped: dict[str, tuple[float, str]] = {}
        self._rate = devices.microphone.sample_rate if devices.microphone is not None else 0

    def losses(self) -> dict[str, float]:
        mic = self.devices.microphone
        overflows = {"microphone_overflows": float(mic.overflows)} if mic is not None else {}
        return {**self._push.losses(), **overflows, **self._lost}

    def stopped_streams(self) -> dict[str, tuple[float, str]]:
        return dict(self._stopped)

    async def frames(self) -> AsyncIterator[Frame]:
        loop = asyncio.get_running_loop()
        for kind, device, deliver in (
            ("camera", self.devices.camera, self._video),
            ("microphone", self.devices.microphone, self._audio),
        ):
            if device is not None:
                thread = threading.Thread(
                    target=self._capture, args=(loop, kind, device, deliver), name=kind
                )
                thread.daemon = True  # a device frozen inside a read must not keep us alive
                self._threads.append(thread)
                thread.start()
        async for frame in self._push.frames():
            yield frame

    async def close(self) -> None:
        self._stopping.set()
        self._push.end()
        if not self._threads:  # never read: nothing else will close them
            self.devices.close()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, JOIN_S)

    def _capture(
        self,
        loop: asyncio.AbstractEventLoop,
        kind: str,
        device: Camera | Microphone,
        deliver: Callable[[np.ndarray, float], None],
    ) -> None:
        """One device's thread: read until the session stops or the device fails.

        The thread owns its device from here and closes it: closing a capture from
        another thread while a read blocks is unsafe in OpenCV and PortAudio."""
        try:
            while not self._stopping.is_set():
                data = device.read()
                loop.call_soon_threadsafe(deliver, data, time.monotonic() - self.origin)
        except Exception as error:
            if not self._stopping.is_set():
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                    loop.call_soon_threadsafe(self._device_lost, kind, error)
        finally:
            device.close()

    def _video(self, rgb: np.ndarray, at: float) -> None:
        if not self._stopping.is_set():
            self._push.push_video(rgb, at)  # the capture time: the loop may run a little later

    def _audio(self, pcm: np.ndarray, at: float) -> None:
        # `at` unused: stamped on arrival, PushSource keeps one sample clock across reads
        if not self._stopping.is_set():
            self._push.push_audio(pcm, self._rate)

    def _device_lost(self, kind: str, error: Exception) -> None:
        """That modality gets no more frames; the source ends when no device is left."""
        log.warning("%s: %s lost (%s); continuing without it", self.name, kind, error)
        self._lost[f"{kind}_lost"] = 1.0
        stream = "video" if kind == "camera" else "audio"
        self._stopped[stream] = (time.monotonic() - self.origin, f"{kind} lost")
        if len(self._lost) == self.has_audio + self.has_video:
            self.ended_because = f"{kind} lost: {error}"
            self._stopping.set()
            self._push.end()
