"""Real headless Chromium for the browser tests, driven over the DevTools protocol.

Chromium plays a .y4m file as its camera and a .wav as its microphone (looped), so the
page under test runs exactly as in a user's browser: getUserMedia, WebRTC to the server,
the data channel back, the DOM updated by the page's own script. It can also run with no
camera at all, and with the site's camera or microphone permission denied (as a user's
"Block" does), at any device pixel ratio.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
import wave
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import av
import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "media" / "sample.mp4"

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--remote-debugging-port=0",
]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def fake_devices(out: Path, seconds: float = 20.0) -> tuple[Path, Path]:
    """The sample's first `seconds` as a camera (.y4m, I420) and a microphone (.wav, s16)."""
    video, audio = out / "camera.y4m", out / "microphone.wav"
    with av.open(str(SAMPLE)) as container:
        stream = container.streams.video[0]
        fps = round(float(stream.average_rate))
        with video.open("wb") as y4m:
            y4m.write(
                f"YUV4MPEG2 W{stream.width} H{stream.height} F{fps}:1 Ip A1:1 C420jpeg\n".encode()
            )
            for frame in container.decode(stream):
                if frame.time > seconds:
                    break
                y4m.write(b"FRAME\n" + frame.reformat(format="yuv420p").to_ndarray().tobytes())
    with av.open(str(SAMPLE)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
        pcm = [
            out_frame.to_ndarray()[0]
            for frame in container.decode(container.streams.audio[0])
            for out_frame in resampler.resample(frame)
        ]
    samples = np.concatenate(pcm)[: int(seconds * 48_000)]
    with wave.open(str(audio), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48_000)
        wav.writeframes(samples.astype(np.int16).tobytes())
    return video, audio


FAKE_UI = "--use-fake-ui-for-media-stream"
"""Accepts every permission prompt (as a user clicking Allow)."""


class Tab:
    """One page, over its own DevTools websocket."""

    def __init__(self, http: aiohttp.ClientSession, ws_url: str) -> None:
        self._http, self._url = http, ws_url
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def _call(self, method: str, **params: object) -> dict:
        if self._ws is None:
            self._ws = await self._http.ws_connect(self._url, max_msg_size=0)
        call_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        async for message in self._ws:
            reply = json.loads(message.data)
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
        raise RuntimeError("DevTools connection closed")

    async def set_permission(self, name: str, setting: str, url: str) -> None:
        """`camera` or `microphone` granted/denied for url's origin (the site settings)."""
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        await self._call(
            "Browser.setPermission", permission={"name": name}, setting=setting, origin=origin
        )

    async def navigate(self, url: str) -> None:
        await self._call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> object:
        result = await self._call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float) -> object:
        """Poll until `expression` is truthy; its value, or TimeoutError naming it."""
        deadline = time.monotonic() + timeout
        problem = ""
        while time.monotonic() < deadline:
            try:
                if value := await self.evaluate(expression):
                    return value
            except RuntimeError as error:  # e.g. the page is still loading
                problem = f" (last error: {error})"
            await asyncio.sleep(0.25)
        raise TimeoutError(f"page never satisfied {expression!r} within {timeout:g} s{problem}")

    async def screenshot(self, path: Path) -> Path:
        data = (await self._call("Page.captureScreenshot", format="png"))["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


class Chromium:
    """A headless Chromium process with fake devices; `open(url)` gives a Tab.

    camera None: the machine has no camera. permissions: site settings
    ({"camera": "denied", "microphone": "granted"}) set for each opened URL's origin;
    without them every prompt is accepted. scale: the device pixel ratio.
    """

    def __init__(
        self,
        profile: Path,
        camera: Path | None,
        microphone: Path,
        *,
        permissions: dict[str, str] | None = None,
        scale: float = 1.0,
    ) -> None:
        binary = chromium_binary()
        if binary is None:
            raise FileNotFoundError("chromium is not installed (Debian: apt install chromium)")
        profile.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.permissions = permissions or {}
        devices = (
            ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}"]
            if camera
            else ["--use-fake-device-for-media-stream=device-count=0"]
        )
        self.process = subprocess.Popen(
            [
                binary,
                *FLAGS,
                *([] if permissions else [FAKE_UI]),
                *devices,
                f"--use-file-for-fake-audio-capture={microphone}",
                f"--user-data-dir={profile}",
                f"--force-device-scale-factor={scale:g}",
                "--window-size=1280,800",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.http = aiohttp.ClientSession()
        self.tabs: list[Tab] = []

    async def _port(self, timeout: float = 30.0) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.exists() and (lines := marker.read_text().split()):
                return int(lines[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            await asyncio.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    async def open(self, url: str) -> Tab:
        port = await self._port()
        async with self.http.put(f"http://127.0.0.1:{port}/json/new") as response:
            target = await response.json()
        tab = Tab(self.http, target["webSocketDebuggerUrl"])
        self.tabs.append(tab)
        for name, setting in self.permissions.items():
            await tab.set_permission(name, setting, url)
        await tab.navigate(url)  # not in /json/new's query, where '&' would cut the URL
        return tab

    async def close(self) -> None:
        for tab in self.tabs:
            await tab.close()
        await self.http.close()
        self.process.kill()
        self.process.wait()
