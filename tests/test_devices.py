"""Local devices through their seam: the bundled sample's real frames played as a camera and a
microphone at real time (these machines have neither), one unplugged mid-stream, and the CLI
that opens them. The real OpenCV/PortAudio backend is checked where it can be: no devices."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

import stream_mmsa
import stream_mmsa.live
from stream_mmsa.cli import app
from stream_mmsa.engine import SessionSummary
from stream_mmsa.media.frames import AUDIO_RATE, AudioChunk, VideoFrame
from stream_mmsa.media.sources import device
from stream_mmsa.media.sources.base import SourceError
from stream_mmsa.media.sources.device import (
    DeviceInfo,
    DeviceSource,
    DeviceSpec,
    list_devices,
    open_devices,
    parse_device_spec,
)

SAMPLE = Path(stream_mmsa.__file__).parent / "samples" / "sample.mp4"
MIC_RATE = 44_100


class RecordedCamera:
    """The sample's video frames, each returned when its time comes, as a camera does;
    `unplug_at`: media time at which reads start failing (the cable pulled)."""

    def __init__(self, unplug_at: float | None) -> None:
        self.unplug_at = unplug_at
        self.closed = False
        self._frames: Iterator[av.VideoFrame] | None = None
        self._start = 0.0

    def read(self) -> np.ndarray:
        if self._frames is None:  # opened on the capture thread: PyAV objects stay on one
            self._frames = av.open(str(SAMPLE)).decode(video=0)
            self._start = time.monotonic()
        frame = next(self._frames)
        if self.unplug_at is not None and frame.time >= self.unplug_at:
            raise OSError("the camera stopped delivering frames")
        time.sleep(max(0.0, self._start + frame.time - time.monotonic()))
        return frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        self.closed = True


class RecordedMicrophone:
    """The sample's audio as 44.1 kHz int16 blocks, each returned once it has been 'recorded'."""

    sample_rate = MIC_RATE
    overflows = 0

    def __init__(self, unplug_at: float | None) -> None:
        self.unplug_at = unplug_at
        self.closed = False
        self._blocks: Iterator[np.ndarray] | None = None
        self._start = 0.0
        self._given = 0

    def _decode(self) -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=MIC_RATE)
        with av.open(str(SAMPLE)) as container:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    yield out.to_ndarray()[0]

    def read(self) -> np.ndarray:
        if self._blocks is None:
            self._blocks = self._decode()
            self._start = time.monotonic()
        if self.unplug_at is not None and self._given / MIC_RATE >= self.unplug_at:
            raise OSError("Unanticipated host error")
        block = next(self._blocks)
        self._given += len(block)
        time.sleep(max(0.0, self._start + self._given / MIC_RATE - time.monotonic()))
        return block

    def close(self) -> None:
        self.closed = True


class RecordedDevices:
    """A backend with two cameras and two microphones that all play the sample."""

    def __init__(
        self, *, camera_unplug_at: float | None = None, mic_unplug_at: float | None = None
    ) -> None:
        self.camera_unplug_at = camera_unplug_at
        self.mic_unplug_at = mic_unplug_at
        self.opened: list[str] = []

    def cameras(self) -> list[DeviceInfo]:
        return [
            DeviceInfo(0, "Integrated Camera", "/dev/video0", default=True),
            DeviceInfo(2, "USB Camera", "/dev/video2"),
        ]

    def microphones(self) -> list[DeviceInfo]:
        return [
            DeviceInfo(0, "HDA Intel PCH: ALC257 Analog", "ALSA, 48000 Hz"),
            DeviceInfo(4, "USB Audio Device", "ALSA, 44100 Hz", default=True),
        ]

    def open_camera(self, info: DeviceInfo) -> RecordedCamera:
        self.opened.append(info.name)
        return RecordedCamera(self.camera_unplug_at)

    def open_microphone(self, info: DeviceInfo) -> RecordedMicrophone:
        self.opened.append(info.name)
        return RecordedMicrophone(self.mic_unplug_at)


class NoDevices(RecordedDevices):
    def cameras(self) -> list[DeviceInfo]:
        return []

    def microphones(self) -> list[DeviceInfo]:
        return []


async def _play(source: DeviceSource, seconds: float) -> list[AudioChunk | VideoFrame]:
    """The frames a session would read in `seconds`, or until the source ends."""
    frames: list[AudioChunk | VideoFrame] = []

    async def take() -> None:
        async for frame in source.frames():
            frames.append(frame)

    reader = asyncio.create_task(take())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(reader), seconds)
    await source.close()
    await reader
    return frames


def _split(frames: list) -> tuple[list[AudioChunk], list[VideoFrame]]:
    return (
        [f for f in frames if isinstance(f, AudioChunk)],
        [f for f in frames if isinstance(f, VideoFrame)],
    )


# --- naming and opening devices --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("webcam", DeviceSpec(webcam=True)),
        ("mic", DeviceSpec(mic=True)),
        ("webcam+mic", DeviceSpec(webcam=True, mic=True)),
        ("mic+webcam:1", DeviceSpec(webcam=True, webcam_at=1, mic=True)),
        ('mic:"USB Audio"', DeviceSpec(mic=True, mic_at="USB Audio")),
        (
            "webcam:2+mic:USB Audio",
            DeviceSpec(webcam=True, webcam_at=2, mic=True, mic_at="USB Audio"),
        ),
        ("webcam.mp4", None),
        ("mic/take1.wav", None),
        ("./webcam", None),
    ],
)
def test_device_names(text: str, spec: DeviceSpec | None) -> None:
    assert parse_device_spec(text) == spec


@pytest.mark.parametrize("text", ["webcam+webcam", "mic:1+mic", "webcam+", "mic:a+b+c"])
def test_malformed_device_names(text: str) -> None:
    with pytest.raises(ValueError, match="expected webcam, mic or webcam\\+mic"):
        parse_device_spec(text)


def test_devices_by_default_index_and_name() -> None:
    backend = RecordedDevices()
    assert open_devices(DeviceSpec(webcam=True, mic=True), backend).name == (
        "webcam:Integrated Camera+mic:USB Audio Device"  # the system defaults
    )
    assert open_devices(DeviceSpec(webcam=True, webcam_at=2), backend).name == "webcam:USB Camera"
    assert open_devices(DeviceSpec(mic=True, mic_at="alc257"), backend).name == (
        "mic:HDA Intel PCH: ALC257 Analog"
    )


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (DeviceSpec(webcam=True, webcam_at=7), "webcam: camera 7 matches none of: 0: Integrated"),
        (DeviceSpec(mic=True, mic_at="a"), "mic: microphone 'a' matches several of: 0: HDA"),
        (DeviceSpec(mic=True, mic_at="Zoom"), "mic: microphone 'Zoom' matches none of"),
    ],
)
def test_a_device_that_is_not_there_is_one_line(spec: DeviceSpec, error: str) -> None:
    with pytest.raises(SourceError) as caught:
        open_devices(spec, RecordedDevices())
    assert str(caught.value).startswith(error) and "\n" not in str(caught.value)


def test_no_devices() -> None:
    for spec, error in (
        (DeviceSpec(webcam=True), "webcam: no camera found"),
        (DeviceSpec(mic=True), "mic: no microphone found"),
    ):
        with pytest.raises(SourceError, match=error):
            open_devices(spec, NoDevices())
    assert list_devices(NoDevices()) == "cameras: none found\nmicrophones: none found"


def test_the_list_marks_defaults() -> None:
    assert list_devices(RecordedDevices()).splitlines() == [
        "cameras:",
        "  * 0: Integrated Camera  (/dev/video0)",
        "    2: USB Camera  (/dev/video2)",
        "microphones:",
        "    0: HDA Intel PCH: ALC257 Analog  (ALSA, 48000 Hz)",
        "  * 4: USB Audio Device  (ALSA, 44100 Hz)",
    ]


def test_missing_portaudio_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sounddevice raises OSError at import without the library; the line names the package."""
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    with pytest.raises(SourceError, match="apt-get install libportaudio2"):
        device.SystemDevices().microphones()
    assert "microphones: no microphone available" in list_devices(device.SystemDevices())


def test_the_real_backend_without_devices() -> None:
    """On this machine: no camera; listing or opening says so in one line."""
    backend = device.SystemDevices()
    if backend.cameras():
        pytest.skip("this machine has a camera")
    with pytest.raises(SourceError, match=r"^webcam: no camera found$"):
        open_devices(DeviceSpec(webcam=True))


# --- the source: real frames on the session clock ---------------------------------------


def test_devices_stream_on_the_session_clock() -> None:
    devices = open_devices(DeviceSpec(webcam=True, mic=True), RecordedDevices())
    source = DeviceSource(devices)
    assert source.has_audio and source.has_video and source.origin is not None
    started = time.monotonic() - source.origin
    frames = asyncio.run(_play(source, 2.0))
    audio, video = _split(frames)
    assert all(c.sample_rate == AUDIO_RATE and c.samples.dtype == np.float32 for c in audio)
    starts = np.array([c.time for c in audio])
    ends = np.array([c.end for c in audio])
    np.testing.assert_allclose(starts[1:], ends[:-1], atol=1e-6)  # one sample clock
    assert started <= starts[0] < 0.5 and 1.4 < ends[-1] < 2.3  # stamped on arrival, real time
    assert any(np.abs(c.samples).max() > 0.05 for c in audio)  # the sample's speech, not zeros
    times = [f.time for f in video]
    assert times == sorted(times) and 1.4 < times[-1] < 2.2
    assert video[0].image.dtype == np.uint8 and video[0].image.ndim == 3
    assert 20 <= len(video) <= 80  # latest-frame semantics: never more than the camera gives
    assert source.ended_because is None and not any(source.losses().values())
    assert devices.camera.closed and devices.microphone.closed  # type: ignore[union-attr]


def test_an_unplugged_camera_leaves_the_microphone_going() -> None:
    source = DeviceSource(
        open_devices(DeviceSpec(webcam=True, mic=True), RecordedDevices(camera_unplug_at=0.8))
    )
    audio, video = _split(asyncio.run(_play(source, 2.0)))
    assert video and max(f.time for f in video) < 1.1  # no frame after the cable went
    assert max(c.end for c in audio) > 1.6  # the session went on with sound
    assert source.losses()["camera_lost"] == 1  # reported: a `degraded` event
    assert source.ended_because is None


def test_the_source_ends_when_its_last_device_is_gone() -> None:
    source = DeviceSource(open_devices(DeviceSpec(mic=True), RecordedDevices(mic_unplug_at=0.5)))
    began = time.monotonic()
    audio, _ = _split(asyncio.run(_play(source, 10.0)))
    assert time.monotonic() - began < 3  # ended by the loss, not by the timeout
    assert audio and max(c.end for c in audio) < 1.0
    assert source.ended_because == "microphone lost: Unanticipated host error"
    assert source.losses()["microphone_lost"] == 1


def test_closing_a_source_never_read_closes_its_devices() -> None:
    devices = open_devices(DeviceSpec(webcam=True), RecordedDevices())
    asyncio.run(DeviceSource(devices).close())
    assert devices.camera.closed  # type: ignore[union-attr]


# --- the command line ---------------------------------------------------------------------


def test_run_lists_and_opens_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = RecordedDevices()
    monkeypatch.setattr(device, "BACKEND", backend)
    made: list = []

    async def run_file(source, *args: object, **kwargs: object) -> SessionSummary:
        made.append(source())  # what run_file does once the models are loaded
        await made[-1].close()
        return SessionSummary("s")

    monkeypatch.setattr(stream_mmsa.live, "run_file", run_file)
    listed = CliRunner().invoke(app, ["run", "--list-devices"])
    assert listed.exit_code == 0 and listed.stdout == list_devices(backend) + "\n"
    ran = CliRunner().invoke(app, ["run", 'webcam:USB+mic:"HDA Intel"'])
    assert ran.exit_code == 0, ran.output
    assert backend.opened == ["USB Camera", "HDA Intel PCH: ALC257 Analog"]
    assert isinstance(made[0], DeviceSource) and made[0].has_audio and made[0].has_video


def test_run_without_a_device_fails_before_models_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "BACKEND", NoDevices())
    monkeypatch.setattr(stream_mmsa.live, "run_file", None)  # calling it would fail loudly
    result = CliRunner().invoke(app, ["run", "webcam+mic"])
    assert (result.exit_code, result.stderr) == (2, "error: webcam: no camera found\n")


# --- through the engine -------------------------------------------------------------------


@pytest.mark.slow
def test_a_camera_unplugged_mid_session_stops_vision_and_the_session_goes_on() -> None:
    from stream_mmsa import Engine, SentimentEvent, SessionEvent

    async def main() -> list:
        events = []
        async with Engine() as engine:
            backend = RecordedDevices(camera_unplug_at=4.0)
            source = DeviceSource(open_devices(DeviceSpec(webcam=True, mic=True), backend))
            async with contextlib.aclosing(engine.analyze(source)) as stream:
                async for event in stream:
                    events.append(event)
                    if isinstance(event, SentimentEvent) and event.window.end >= 10:
                        break
        return events

    events = asyncio.run(main())
    windows = [e for e in events if isinstance(e, SentimentEvent)]
    vision = {e.window.end: e.modalities["vision"].state for e in windows}
    # The source says the camera stopped for good: vision is `missing`, not waited for.
    assert vision[4.0] == "present" and vision[10.0] == "missing"
    status = [e for e in events if getattr(e, "modality", None) == "vision"]
    assert status[-1].state == "missing" and status[-1].reason == "camera lost"
    assert windows[-1].modalities["vision"].action != "used"
    assert windows[-1].modalities["audio"].action == "used"  # the microphone goes on
    degraded = [e for e in events if isinstance(e, SessionEvent) and e.state == "degraded"]
    assert any("camera lost: 1" in e.reason for e in degraded)
