"""`stream-mmsa serve` end to end: real server process, real aiortc peers, real Chromium.

One server runs for the module (models load once). Python aiortc peers publish the
bundled sample like a conferencing backend; the browser tests drive Debian's Chromium
with the sample as its fake camera and microphone.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import AudioStreamTrack
from chromium import SAMPLE, Chromium, chromium_binary, fake_devices
from conftest import AUTH, TOKEN, post_offer
from serving import Server, free_port, serve

from stream_mmsa.events import parse_event
from stream_mmsa.sinks.eventlog import read_events

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MAX_SESSIONS = 3
IDLE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    with serve(
        tmp_path_factory.mktemp("serve"),
        f"--set=server.max_sessions={MAX_SESSIONS}",
        f"--set=server.idle_timeout={IDLE_TIMEOUT}",
        "--set=server.allowed_origins=[http://allowed.example]",
    ) as srv:
        yield srv


class Publisher:
    """A conferencing-side peer: publishes the sample, collects events from its channel."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.events: list[dict] = []
        self.session = ""

    async def join(self, http: aiohttp.ClientSession, url: str, **tags: str) -> int:
        player = MediaPlayer(str(SAMPLE))
        self.pc.addTrack(player.audio)
        self.pc.addTrack(player.video)
        self.channel = channel = self.pc.createDataChannel("events")
        channel.on("message", lambda message: self.events.append(json.loads(message)))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", **tags}
        status, answer = await post_offer(http, url, body, AUTH)
        if status == 200:
            self.session = answer["session"]
            await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        return status

    async def wait_sentiment(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while sum(e["type"] == "sentiment" for e in self.events) < count:
            assert time.monotonic() < deadline, f"only {len(self.events)} events arrived"
            await asyncio.sleep(0.2)


async def _sessions(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url + "/healthz") as response:
        return (await response.json())["sessions"]


# --- access and limits --------------------------------------------------------------


def test_origin_allow_list(server: Server) -> None:
    async def check() -> None:
        async with aiohttp.ClientSession() as http:
            evil = {**AUTH, "Origin": "http://evil.example"}
            status, body = await post_offer(http, server.url, {}, evil)
            assert (status, body["error"]) == (403, "origin_not_allowed")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(
                    f"{server.url}/events?token={TOKEN}", origin="http://evil.example"
                )
            assert refused.value.status == 403
            allowed = {**AUTH, "Origin": "http://allowed.example"}
            async with http.post(server.url + "/offer", data="{}", headers=allowed) as response:
                assert response.status == 400
                assert response.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
            preflight = {"Origin": "http://allowed.example"}  # no token: browsers send none
            async with http.options(server.url + "/offer", headers=preflight) as response:
                assert response.status == 204
                assert "POST" in response.headers["Access-Control-Allow-Methods"]
                assert response.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
            async with http.options(
                server.url + "/offer", headers={"Origin": "http://evil.example"}
            ) as response:
                assert response.status == 403
            same = {**AUTH, "Origin": server.url}
            status, _ = await post_offer(http, server.url, {}, same)
            assert status == 400

    asyncio.run(check())


def test_one_person_per_offer(server: Server) -> None:
    async def check() -> None:
        pc = RTCPeerConnection()
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            body = {"sdp": pc.localDescription.sdp, "type": "offer"}
            status, answer = await post_offer(http, server.url, body, AUTH)
        await pc.close()
        assert (status, answer["error"]) == (400, "too_many_tracks")

    asyncio.run(check())
    assert server.get("/healthz")["sessions"] == 0


# --- conferencing peers ---------------------------------------------------------------


def test_session_cap_resume_and_a_vanishing_client(server: Server) -> None:
    """Fill the server: the next offer is refused; a killed client's session is closed
    within a bounded time while another carries on; a subscriber resumes by seq."""

    async def check() -> None:
        async with aiohttp.ClientSession() as http:
            # a conferencing client in its own process, killed without saying goodbye
            doomed = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "examples" / "conference_client.py"),
                    f"--server={server.url}",
                    f"--token={TOKEN}",
                    "--room=doomed",
                    "--seconds=60",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            survivor = Publisher()
            assert await survivor.join(http, server.url, room="cap", participant="carol") == 200
            deadline = time.monotonic() + 60
            while await _sessions(http, server.url) < MAX_SESSIONS:
                assert time.monotonic() < deadline and doomed.poll() is None
                await asyncio.sleep(0.2)
            extra = Publisher()
            assert await extra.join(http, server.url) == 503
            await extra.pc.close()
            status, body = await post_offer(http, server.url, {"sdp": "v=0", "type": "offer"}, AUTH)
            assert (status, body["error"]) == (503, "session_limit")

            await survivor.wait_sentiment(4)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
            killed_at = time.monotonic()
            while await _sessions(http, server.url) > 1:
                assert time.monotonic() - killed_at < IDLE_TIMEOUT + 12, "vanished peers linger"
                await asyncio.sleep(0.2)
            before = len(survivor.events)
            await survivor.wait_sentiment(
                sum(e["type"] == "sentiment" for e in survivor.events) + 4
            )
            assert len(survivor.events) > before  # the other session carried on

            # resume: a subscriber that already has seq ≤ 5 gets 6, 7, … exactly once
            url = f"{server.url}/events?token={TOKEN}&session={survivor.session}&after=5"
            async with http.ws_connect(url) as ws:
                seqs = [json.loads((await ws.receive(timeout=20)).data)["seq"] for _ in range(12)]
            assert seqs == list(range(6, 18))
            # an oversized data-channel message: the server closes that channel
            channel = survivor.channel
            channel.send("x" * 10_000)
            deadline = time.monotonic() + 10
            while channel.readyState != "closed":
                assert time.monotonic() < deadline, "oversized message did not close the channel"
                await asyncio.sleep(0.1)
            await survivor.pc.close()
            logged = await asyncio.to_thread(read_events, server.db, survivor.session)
            assert [e.seq for e in logged] == list(range(len(logged)))
            by_seq = {e["seq"]: e for e in survivor.events}
            assert all(by_seq[e.seq]["type"] == e.type for e in logged if e.seq in by_seq)

    asyncio.run(check())


# --- real browsers --------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed")


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return fake_devices(tmp_path_factory.mktemp("devices"))


@needs_chromium
def test_browser_page_streams_and_shows_sentiment(
    server: Server, devices: tuple[Path, Path], tmp_path: Path
) -> None:
    async def check() -> None:
        browser = Chromium(tmp_path / "profile", *devices)
        try:
            tab = await browser.open(f"{server.url}/?token={TOKEN}")
            session = await tab.wait_for("document.body.dataset.session", 60)
            async with aiohttp.ClientSession() as http:
                url = f"{server.url}/events?session={session}&token={TOKEN}"
                async with http.ws_connect(url) as ws:
                    first = parse_event((await ws.receive(timeout=30)).data)
                    assert first.session == session
            await tab.wait_for("Number(document.getElementById('chart').dataset.points) >= 4", 60)
            text = await tab.wait_for("document.getElementById('final').textContent.trim()", 60)
            assert len(text.split()) >= 2
            states = await tab.evaluate(
                "[...document.querySelectorAll('.badge')].map(b => b.dataset.state)"
            )
            assert set(states) <= {"present", "partial", "late", "missing"}
            assert (
                await tab.evaluate("document.getElementById('connection').dataset.state")
                == "connected"
            )
            shot = await tab.screenshot(tmp_path / "page.png")
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")

            # devices lost: media stops, the server ends the session, the page reconnects
            await tab.evaluate("stream.getTracks().forEach((t) => t.stop())")
            renewed = f"(s => s && s !== {session!r})(document.body.dataset.session)"
            await tab.wait_for(renewed, IDLE_TIMEOUT + 30)
            points = await tab.evaluate("Number(document.getElementById('chart').dataset.points)")
            await tab.wait_for(
                f"Number(document.getElementById('chart').dataset.points) > {points}", 60
            )
        finally:
            await browser.close()
        logged = await asyncio.to_thread(read_events, server.db, session)
        assert [e.seq for e in logged] == list(range(len(logged)))

    asyncio.run(check())


@needs_chromium
def test_two_browser_sessions_in_one_room(
    server: Server, devices: tuple[Path, Path], tmp_path: Path
) -> None:
    async def check() -> None:
        received: dict[str, list] = defaultdict(list)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{server.url}/events?room=meet&token={TOKEN}")

            async def listen() -> None:
                async for message in ws:
                    event = parse_event(message.data)
                    received[event.session].append(event)

            listener = asyncio.create_task(listen())
            browser = Chromium(tmp_path / "profile", *devices)
            try:
                tabs = {
                    name: await browser.open(
                        f"{server.url}/?token={TOKEN}&room=meet&participant={name}"
                    )
                    for name in ("ana", "ben")
                }
                sessions = {
                    name: await tab.wait_for("document.body.dataset.session", 60)
                    for name, tab in tabs.items()
                }
                deadline = time.monotonic() + 90
                while any(
                    sum(e.type == "sentiment" for e in received[s]) < 6 for s in sessions.values()
                ):
                    assert time.monotonic() < deadline, {s: len(v) for s, v in received.items()}
                    await asyncio.sleep(0.5)
                for name, tab in tabs.items():
                    await tab.screenshot(tmp_path / f"{name}.png")
            finally:
                await browser.close()
                listener.cancel()
                await ws.close()
        for name, session in sessions.items():
            events = received[session]
            assert {(e.room, e.participant) for e in events} == {("meet", name)}
            seqs = [e.seq for e in events]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # gapless, in order
        assert set(received) == set(sessions.values())

    asyncio.run(check())


def test_health_and_metrics(server: Server) -> None:
    """After the sessions above: counters, the latency histogram and live gauges."""

    async def check() -> dict[str, float]:
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    health = server.get("/healthz")
    assert health["status"] == "ok" and health["max_sessions"] == MAX_SESSIONS
    samples = asyncio.run(check())
    assert samples['stream_mmsa_events_total{type="sentiment"}'] > 0
    assert samples["stream_mmsa_event_latency_seconds_count"] > 0
    assert samples['stream_mmsa_sessions_finished_total{outcome="refused"}'] >= 1
    assert samples['stream_mmsa_frames_received_total{kind="video"}'] > 0
    for name in ("stream_mmsa_sessions", 'stream_mmsa_queue_depth{queue="inference"}'):
        assert name in samples
    for worker in ("inference", "text"):  # the sessions above ran windows with words
        assert samples[f'stream_mmsa_batched_items_total{{worker="{worker}"}}'] > 0
        calls = samples[f'stream_mmsa_batched_calls_total{{worker="{worker}"}}']
        assert 0 < calls <= samples[f'stream_mmsa_batched_items_total{{worker="{worker}"}}']


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (cryptography comes with aiortc)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_with_a_certificate_and_clear_errors_without_one(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    binary = str(Path(sys.executable).parent / "stream-mmsa")
    broken = subprocess.run(
        [binary, "serve", f"--tls-cert={cert}", f"--token={TOKEN}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broken.returncode == 2 and "tls_cert and tls_key go together" in broken.stderr
    port = free_port()
    command = [binary, "serve", f"--port={port}", f"--token={TOKEN}", f"--db={tmp_path / 'e.db'}"]
    process = subprocess.Popen(
        [*command, f"--tls-cert={cert}", f"--tls-key={key}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def health() -> dict:
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"https://127.0.0.1:{port}/healthz", ssl=False) as r:
                        return await r.json()
                except aiohttp.ClientError:
                    assert process.poll() is None and time.monotonic() < deadline
                    await asyncio.sleep(0.5)

    try:
        assert asyncio.run(health())["status"] == "ok"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
