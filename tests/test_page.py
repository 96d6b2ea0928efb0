"""The page as people meet it, in real headless Chromium against a real `stream-mmsa serve`:
no camera, a denied camera, a denied microphone, everything denied, plain http from
another machine, start/stop and mute, and the room view with every participant's line.
Screenshots go to each test's tmp dir (the path is printed).
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import pytest
from chromium import Chromium, Tab, chromium_binary, fake_devices
from conftest import AUTH, TOKEN
from serving import Server, serve

from stream_mmsa.config import ConfigError, load_config
from stream_mmsa.events import NEUTRAL_BAND

browser = pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed")

ICE = [
    {"urls": ["stun:127.0.0.1:3478"]},
    {"urls": ["turn:127.0.0.1:3478"], "username": "page", "credential": "test-credential"},
]
"""Passed to the page; nothing listens there, so candidates are host ones as on a LAN."""


def _lan_address() -> str:
    """This machine's address on its network (not loopback); no packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("this machine has no network address besides loopback")
        return probe.getsockname()[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    with serve(
        tmp_path_factory.mktemp("serve"),
        "--set=server.host=0.0.0.0",  # reachable by the machine's own network address too
        f"--set=server.ice_servers={json.dumps(ICE)}",
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return fake_devices(tmp_path_factory.mktemp("devices"))


def _page(server: Server, query: str = "") -> str:
    return f"{server.url}/?token={TOKEN}{query}"


async def _text(tab: Tab, element: str) -> str:
    return await tab.evaluate(f"document.getElementById({element!r}).textContent")


async def _points(tab: Tab, at_least: int) -> None:
    await tab.wait_for(f"Number(document.getElementById('chart').dataset.points) >= {at_least}", 90)


async def _click(tab: Tab, button: str) -> None:
    await tab.evaluate(f"document.getElementById({button!r}).click()")


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        ('[{urls: ["http://stun.example.org"]}]', "must start with one of"),
        ('[{urls: ["turn:turn.example.org:3478"]}]', "needs a username and a credential"),
        ("[{urls: []}]", "at least 1 item"),
        ('[{url: "stun:stun.example.org"}]', r"url: unknown key \(valid keys here: urls"),
    ],
)
def test_ice_servers_are_checked_with_a_clear_error(servers: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(overrides=[f"server.ice_servers={servers}"])


@pytest.mark.slow
def test_page_config_needs_the_token_and_carries_the_ice_servers(server: Server) -> None:
    async def check() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/page.json") as response:
                assert response.status == 401
            async with http.get(server.url + "/page.json", headers=AUTH) as response:
                assert await response.json() == {"ice_servers": ICE, "neutral_band": NEUTRAL_BAND}

    asyncio.run(check())


@pytest.mark.slow
@browser
def test_audio_only_without_a_camera_with_stop_start_and_mute(
    server: Server, devices: tuple[Path, Path], tmp_path: Path
) -> None:
    async def check() -> None:
        browser = Chromium(tmp_path / "profile", None, devices[1], scale=2)
        try:
            tab = await browser.open(_page(server))
            first = await tab.wait_for("document.body.dataset.session", 60)
            assert await tab.evaluate("document.body.dataset.media") == "audio"
            assert "camera: none found" in await _text(tab, "notice")
            assert await tab.evaluate("document.getElementById('preview').hidden")
            iceservers = await tab.evaluate("pc.getConfiguration().iceServers")
            assert [s["urls"] for s in iceservers] == [s["urls"] for s in ICE]
            assert iceservers[1]["credential"] == "test-credential"
            await _points(tab, 3)
            vision = "document.getElementById('modality-vision').dataset.state"
            assert await tab.evaluate(vision) == "missing"
            # sharp on a HiDPI screen: the canvas has its box's size × devicePixelRatio pixels
            size = await tab.evaluate(
                "(c => [c.width, c.height, c.getBoundingClientRect().width,"
                " c.getBoundingClientRect().height, devicePixelRatio])"
                "(document.getElementById('chart'))"
            )
            assert size[4] == 2 and size[:2] == [round(size[2] * 2), round(size[3] * 2)]
            assert await tab.evaluate("document.getElementById('camera-off').disabled")
            await _click(tab, "mute")
            assert await tab.evaluate("!stream.getAudioTracks()[0].enabled")
            assert await _text(tab, "mute") == "Unmute microphone"
            await _click(tab, "mute")
            assert await tab.evaluate("stream.getAudioTracks()[0].enabled")
            # another microphone from the picker: swapped in place, the session goes on
            label = "stream.getAudioTracks()[0].label"
            before = await tab.evaluate(label)
            await tab.evaluate(
                "(s => { s.value = [...s.options].map(o => o.value)"
                ".filter(v => v && v !== 'none' && v !== s.value).pop();"
                " s.dispatchEvent(new Event('change')); })(document.getElementById('mic'))"
            )
            await tab.wait_for(f"{label} !== {before!r}", 30)
            sent = "pc.getSenders().find(s => s.track && s.track.kind === 'audio').track"
            assert await tab.evaluate(f"{sent} === stream.getAudioTracks()[0]")
            assert await tab.evaluate("document.body.dataset.session") == first
            shot = await tab.screenshot(tmp_path / "audio-only.png")
            print(f"screenshot: {shot}")

            await _click(tab, "startstop")
            state = "document.getElementById('connection').dataset.state"
            assert await tab.evaluate(state) == "stopped"
            assert await tab.evaluate("pc === null && stream === null")
            assert await _text(tab, "startstop") == "Start"
            await _click(tab, "startstop")
            renewed = f"(s => s && s !== {first!r})(document.body.dataset.session)"
            await tab.wait_for(renewed, 60)
            await tab.wait_for(f"{state} === 'connected'", 60)
        finally:
            await browser.close()

    asyncio.run(check())


@pytest.mark.slow
@browser
def test_denied_camera_then_microphone_then_both(
    server: Server, devices: tuple[Path, Path], tmp_path: Path
) -> None:
    """A denied camera: audio only. A denied microphone: video only. Both: one final message."""

    async def check() -> None:
        permissions = {"camera": "denied", "microphone": "granted"}
        browser = Chromium(tmp_path / "profile", *devices, permissions=permissions)
        try:
            url = _page(server)
            tab = await browser.open(url)
            await tab.wait_for("document.body.dataset.session", 60)
            assert await tab.evaluate("document.body.dataset.media") == "audio"
            assert "audio only — camera: permission denied" in await _text(tab, "notice")
            await _points(tab, 2)
            print(f"screenshot: {await tab.screenshot(tmp_path / 'camera-denied.png')}")

            await tab.set_permission("camera", "granted", url)
            await tab.set_permission("microphone", "denied", url)
            await _click(tab, "startstop")
            await _click(tab, "startstop")
            await tab.wait_for("document.body.dataset.media === 'video'", 60)
            assert "video only — microphone: permission denied" in await _text(tab, "notice")

            await tab.set_permission("camera", "denied", url)
            await _click(tab, "startstop")
            await _click(tab, "startstop")
            await tab.wait_for("document.getElementById('notice').hasAttribute('data-final')", 30)
            notice = await _text(tab, "notice")
            assert "permission denied" in notice and "site settings" in notice
            # final: stopped, nothing scheduled, a Start button for when the user has fixed it
            assert await tab.evaluate(
                "[document.getElementById('connection').dataset.state, running, retryTimer, pc]"
            ) == ["error", False, None, None]
            assert await _text(tab, "startstop") == "Start"
            print(f"screenshot: {await tab.screenshot(tmp_path / 'all-denied.png')}")
        finally:
            await browser.close()

    asyncio.run(check())


@pytest.mark.slow
@browser
def test_plain_http_from_another_machine_says_so_and_the_room_view_still_works(
    server: Server, devices: tuple[Path, Path], tmp_path: Path
) -> None:
    async def check() -> None:
        page = _page(server).replace("127.0.0.1", _lan_address())
        browser = Chromium(tmp_path / "profile", *devices)
        try:
            tab = await browser.open(page)
            await tab.wait_for("document.getElementById('notice').hasAttribute('data-final')", 30)
            assert "plain http" in await _text(tab, "notice")
            assert await tab.evaluate("document.body.dataset.session") is None
            print(f"screenshot: {await tab.screenshot(tmp_path / 'insecure.png')}")
            room = await browser.open(page + "&room=nobody-here&view=room")
            await room.wait_for(
                "document.getElementById('connection').dataset.state === 'connected'", 30
            )
        finally:
            await browser.close()

    asyncio.run(check())


@pytest.mark.slow
@browser
def test_room_view_draws_every_participant(
    server: Server, devices: tuple[Path, Path], tmp_path: Path
) -> None:
    async def check() -> None:
        browser = Chromium(tmp_path / "profile", *devices)
        try:
            room = await browser.open(_page(server, "&room=meet&view=room"))
            await room.wait_for(
                "document.getElementById('connection').dataset.state === 'connected'", 30
            )
            people = {
                name: await browser.open(_page(server, f"&room=meet&participant={name}"))
                for name in ("ana", "ben")
            }
            for tab in people.values():
                await _points(tab, 3)
            await room.wait_for("Number(document.getElementById('chart').dataset.lines) === 2", 60)
            cards = (
                "[...document.querySelectorAll('.participant')]"
                ".map(c => [c.dataset.name, c.querySelector('.score').textContent])"
            )
            await room.wait_for(f"{cards}.every(([, score]) => score)", 60)
            assert {name for name, _ in await room.evaluate(cards)} == {"ana", "ben"}
            # each participant sees the face's expression: the sample shows a face from the start
            ana = people["ana"]
            await ana.wait_for("document.getElementById('expression').dataset.label", 60)
            rows = await ana.evaluate("document.querySelectorAll('#expression .bar').length")
            assert rows == 7
            print(f"screenshot: {await room.screenshot(tmp_path / 'room.png')}")
            print(f"screenshot: {await ana.screenshot(tmp_path / 'page.png')}")
        finally:
            await browser.close()

    asyncio.run(check())
