"""Bad input gets one clear error, never a traceback: the CLI and the server's routes.

CLI cases fail up front, before any model loads (loading is replaced by a failure here),
with exit code 2 and one `error:` line; a few also run the installed command, where a
traceback would show. Server cases go through aiohttp's test client on the app `serve`
builds, around a runtime without models (no request here reaches one).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from chromium import SAMPLE
from conftest import AUTH, TOKEN, post_offer
from typer.testing import CliRunner

import stream_mmsa.live
import stream_mmsa.server
from stream_mmsa.cli import app
from stream_mmsa.config import ServerConfig
from stream_mmsa.events import StatusEvent
from stream_mmsa.media.sources import device
from stream_mmsa.media.sources.base import SourceError
from stream_mmsa.server.app import build_app
from stream_mmsa.sinks.eventlog import EventLog
from stream_mmsa.sinks.websocket import MAX_SEQ, WebSocketHub

BINARY = Path(sys.executable).parent / "stream-mmsa"
LONG = "x" * 300  # over NAME_MAX (255): ENAMETOOLONG from the OS
SUPPORTED = "supported sources: a media file path"

# --- the command line ----------------------------------------------------------------

# (argv, fragment of the error); {tmp} holds the files of `workdir`, {busy} is a port in use
CLI_CASES = {
    "db-is-a-directory": (["run", "{sample}", "--db", "{tmp}"], "is a directory"),
    "db-in-unwritable-dir": (["run", "{sample}", "--db", "/sys/e.sqlite"], "cannot create files"),
    "db-parent-uncreatable": (
        ["run", "{sample}", "--db", "/proc/no/such/e.sqlite"],
        "cannot create files in /proc",
    ),
    "db-parent-is-a-file": (["run", "{sample}", "--db", "{tmp}/plain/e.sqlite"], "not a directory"),
    "db-not-sqlite": (["run", "{sample}", "--db", "{tmp}/notes.txt"], "not an SQLite database"),
    "db-short-header": (["run", "{sample}", "--db", "{tmp}/short.db"], "not an SQLite database"),
    "db-other-log-format": (["run", "{sample}", "--db", "{tmp}/format7.sqlite"], "log format 7"),
    "db-a-device": (["run", "{sample}", "--db", "/dev/null"], "not a regular file"),
    "db-name-too-long": (["run", "{sample}", "--db", f"{{tmp}}/{LONG}"], "File name too long"),
    "jsonl-is-a-directory": (["run", "{sample}", "--jsonl", "{tmp}"], "is a directory"),
    "jsonl-unwritable-file": (
        ["run", "{sample}", "--jsonl", "/proc/version"],
        "cannot write to /proc/version",
    ),
    "jsonl-in-unwritable-dir": (
        ["run", "{sample}", "--jsonl", "/sys/out/e.jsonl"],
        "cannot create files in /sys",
    ),
    "jsonl-parent-is-a-file": (["run", "{sample}", "--jsonl", "{tmp}/plain/e"], "not a directory"),
    "ws-port-busy": (["run", "{sample}", "--ws", "127.0.0.1:{busy}"], "Address already in use"),
    "ws-port-too-big": (["run", "{sample}", "--ws", "127.0.0.1:99999"], "out of range"),
    "ws-port-negative": (["run", "{sample}", "--ws", "127.0.0.1:-1"], "out of range"),
    "ws-port-not-a-number": (["run", "{sample}", "--ws", "127.0.0.1:http"], "is not a number"),
    "ws-no-port": (["run", "{sample}", "--ws", "localhost"], "expected HOST:PORT"),
    "ws-url": (["run", "{sample}", "--ws", "ws://127.0.0.1:8765/events"], "without a scheme"),
    "ws-bad-host": (["run", "{sample}", "--ws", "no host!:8765"], "not a host name"),
    "source-name-too-long": (["run", LONG], f"source {LONG[:79]}…: File name too long"),
    "source-webcam": (["run", "webcam"], "webcam: no camera found"),  # this machine has none
    "source-mic": (["run", "mic"], "mic: no microphone"),  # nor a microphone, maybe no PortAudio
    "source-webcam-fast": (["run", "webcam", "--fast"], "live devices run in real time"),
    "source-bad-device": (["run", "webcam+webcam"], "expected webcam, mic or webcam+mic"),
    "source-http-url": (["run", "http://example.com/talk.mp4"], "is a URL; " + SUPPORTED),
    "source-rtsp-url": (["run", "rtsp://camera.local/stream"], "is a URL; " + SUPPORTED),
    "source-is-a-directory": (["run", "{tmp}"], "is a directory; " + SUPPORTED),
    "serve-db-is-a-directory": (["serve", "--db", "{tmp}"], "is a directory"),
    "serve-db-not-sqlite": (["serve", "--db", "{tmp}/notes.txt"], "not an SQLite database"),
    "serve-port-too-big": (["serve", "--port", "99999"], "less than or equal to 65535"),
    "serve-port-busy": (["serve", "--port", "{busy}"], "Address already in use"),
}


def skip_if_devices() -> None:
    """The device cases are about a machine without a camera or microphone."""
    for listing in (device.BACKEND.cameras, device.BACKEND.microphones):
        with contextlib.suppress(SourceError):
            if listing():
                pytest.skip("this machine has a camera or microphone")


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Files the cases point at: a regular file, non-SQLite files, a log of another format."""
    (tmp_path / "plain").write_text("a file, not a directory")
    (tmp_path / "notes.txt").write_text("these are notes, not a database\n")
    (tmp_path / "short.db").write_bytes(b"SQLite")
    conn = sqlite3.connect(tmp_path / "format7.sqlite")
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    return tmp_path


def _argv(case: str, workdir: Path, busy_port: int) -> list[str]:
    argv = [a.format(tmp=workdir, sample=SAMPLE, busy=busy_port) for a in CLI_CASES[case][0]]
    return [*argv, f"--token={TOKEN}"] if argv[0] == "serve" else argv


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_bad_arguments_before_loading_models(
    case: str, workdir: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def load_models(*args: object, **kwargs: object) -> None:
        raise AssertionError("the check came too late: the models would load now")

    monkeypatch.setattr(stream_mmsa.live, "run_file", load_models)
    monkeypatch.setattr(stream_mmsa.server, "serve", load_models)
    monkeypatch.chdir(workdir)  # serve's default log, out/events.sqlite, lands here
    if case in ("source-webcam", "source-mic"):
        skip_if_devices()
    result = CliRunner().invoke(app, _argv(case, workdir, busy_port))
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert CLI_CASES[case][1] in result.stderr


@pytest.mark.parametrize(
    "case", ["db-not-sqlite", "ws-port-busy", "source-name-too-long", "source-webcam", "source-mic"]
)
def test_the_installed_command_prints_one_line_and_no_traceback(
    case: str, workdir: Path, busy_port: int
) -> None:
    if case in ("source-webcam", "source-mic"):
        skip_if_devices()  # OpenCV and PortAudio write to stderr themselves unless silenced
    done = subprocess.run(
        [str(BINARY), *_argv(case, workdir, busy_port)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert CLI_CASES[case][1] in done.stderr


# --- the server ----------------------------------------------------------------------


async def _with_client(tmp_path: Path, check):
    """Run `check(client)` against the server's app; no request in this file needs models."""
    config = ServerConfig(db=tmp_path / "events.sqlite")
    app = build_app(SimpleNamespace(worker=None, text_worker=None), config, TOKEN)
    async with TestClient(TestServer(app)) as client:
        return await check(client)


SDP_BAD_MLINE = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111\r\n"

# (body, headers, status, error code)
OFFER_CASES = {
    "not-json": (b"not json at all", AUTH, 400, "bad_json"),
    "not-utf8": (b'{"sdp": "\xff\xfe"}', AUTH, 400, "bad_json"),
    "deeply-nested": (b"[" * 50_000, AUTH, 400, "bad_json"),
    "int-over-4300-digits": (b'{"sdp": ' + b"1" * 5000 + b"}", AUTH, 400, "bad_json"),
    "not-an-object": ([1, 2, 3], AUTH, 400, "bad_offer"),
    "missing-sdp": ({"type": "offer"}, AUTH, 400, "bad_offer"),
    "empty-sdp": ({"sdp": "", "type": "offer"}, AUTH, 400, "bad_offer"),
    "sdp-not-a-string": ({"sdp": 42, "type": "offer"}, AUTH, 400, "bad_offer"),
    "wrong-type": ({"sdp": "v=0", "type": "answer"}, AUTH, 400, "bad_offer"),
    "bad-room": ({"sdp": "v=0", "type": "offer", "room": "no spaces"}, AUTH, 400, "bad_offer"),
    "long-participant": (
        {"sdp": "v=0", "type": "offer", "participant": "p" * 65},
        AUTH,
        400,
        "bad_offer",
    ),
    "unexpected-field": ({"sdp": "v=0", "type": "offer", "unexpected": 1}, AUTH, 400, "bad_offer"),
    "not-sdp": ({"sdp": "this is not SDP", "type": "offer"}, AUTH, 400, "no_media"),
    "malformed-sdp": ({"sdp": SDP_BAD_MLINE, "type": "offer"}, AUTH, 400, "malformed_offer"),
    "oversized": (
        {"sdp": "v=0\r\n" + "a=x\r\n" * 20_000, "type": "offer"},
        AUTH,
        413,
        "request_entity_too_large",
    ),
    "no-token": ({}, None, 401, "unauthorized"),
    "wrong-token": ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, 401, "unauthorized"),
}


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"), OFFER_CASES.values(), ids=OFFER_CASES.keys()
)
def test_bad_offers_get_a_status_with_json(
    tmp_path: Path, body: object, headers: dict | None, status: int, code: str
) -> None:
    got, answer = asyncio.run(_with_client(tmp_path, lambda c: post_offer(c, "", body, headers)))
    assert (got, answer["error"]) == (status, code)
    assert answer["message"]


# (path and query, headers, status, error code, fragment of the message)
GET_CASES = {
    "events-no-token": ("/events", None, 401, "unauthorized", "token"),
    "events-wrong-token": (
        "/events?token=wrong-token-wrong-token",
        None,
        401,
        "unauthorized",
        "token",
    ),
    "after-overflows-int64": (
        "/events?after=s:99999999999999999999999",
        AUTH,
        400,
        "bad_subscription",
        "from -1 to 9223372036854775807",
    ),
    "after-not-an-integer": ("/events?after=s:five", AUTH, 400, "bad_subscription", "an integer"),
    "after-below-minus-one": ("/events?after=s:-2", AUTH, 400, "bad_subscription", "from -1"),
    "after-without-session": (
        "/events?after=5",
        AUTH,
        400,
        "bad_subscription",
        "exactly one session",
    ),
    "after-with-two-sessions": (
        "/events?session=a&session=b&after=5",
        AUTH,
        400,
        "bad_subscription",
        "exactly one session",
    ),
    "empty-session": ("/events?session=", AUTH, 400, "bad_subscription", "session= needs a name"),
    "empty-room": ("/events?room=", AUTH, 400, "bad_subscription", "room= needs a name"),
    "long-room": (
        f"/events?room={'r' * 200}",
        AUTH,
        400,
        "bad_subscription",
        "1 to 128 characters",
    ),
    "long-after-session": (
        f"/events?after={'s' * 200}:1",
        AUTH,
        400,
        "bad_subscription",
        "at most 128",
    ),
    "too-many-sessions": (
        "/events?" + "&".join(f"session=s{i}" for i in range(65)),
        AUTH,
        400,
        "bad_subscription",
        "at most 64",
    ),
    "unknown-route": ("/nowhere", AUTH, 404, "not_found", "Not Found"),
    "get-on-offer": ("/offer", AUTH, 405, "method_not_allowed", "Method Not Allowed"),
}


@pytest.mark.parametrize(
    ("path", "headers", "status", "code", "fragment"), GET_CASES.values(), ids=GET_CASES.keys()
)
def test_bad_requests_get_a_status_with_json(
    tmp_path: Path, path: str, headers: dict | None, status: int, code: str, fragment: str
) -> None:
    async def get(client: TestClient) -> tuple[int, dict]:
        async with client.get(path, headers=headers) as response:
            return response.status, await response.json()

    got, answer = asyncio.run(_with_client(tmp_path, get))
    assert (got, answer["error"]) == (status, code)
    assert fragment in answer["message"]


def test_oversized_websocket_message_closes_with_1009(tmp_path: Path) -> None:
    async def check(client: TestClient) -> aiohttp.WSMessage:
        async with client.ws_connect(f"/events?token={TOKEN}") as ws:
            await ws.send_str("x" * 10_000)
            return await ws.receive(timeout=10)

    message = asyncio.run(_with_client(tmp_path, check))
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


# --- the websocket hub at its limits ---------------------------------------------------


def _status(session: str, seq: int) -> StatusEvent:
    return StatusEvent(session=session, seq=seq, modality="vision", state="missing", since=1.0)


def test_after_the_largest_seq_is_accepted(tmp_path: Path) -> None:
    """after= at the int64 limit reads the log (no OverflowError); the others replay."""

    async def main() -> list[int]:
        log = EventLog(tmp_path / "events.sqlite")
        for seq in range(3):
            await log.send(_status("b", seq))
        hub = WebSocketHub(log=log)
        port = await hub.start("127.0.0.1", 0)
        query = f"after=a:{MAX_SEQ}&after=b:0"
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{port}/events?{query}") as ws,
        ):
            seqs = [(await ws.receive_json(timeout=5))["seq"] for _ in range(2)]
        await hub.close()
        await log.close()
        return seqs

    assert asyncio.run(main()) == [1, 2]


def test_a_failing_replay_closes_with_1011_not_slow_consumer(tmp_path: Path) -> None:
    """The writer's unexpected error reaches the client as an internal error at once."""

    async def main() -> aiohttp.WSMessage:
        log = EventLog(tmp_path / "events.sqlite")
        await log.close()  # replaying now raises EventLogError
        hub = WebSocketHub(log=log)
        port = await hub.start("127.0.0.1", 0)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{port}/events?after=a:1") as ws,
        ):
            message = await ws.receive(timeout=5)
        await hub.close()
        return message

    message = asyncio.run(main())
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert message.data == aiohttp.WSCloseCode.INTERNAL_ERROR
