"""Up-front checks of the command line's source and sink targets, before any model loads.

Why: the source and sinks are opened only after the models have loaded, and a bad path
or a busy port then ends in a traceback. Each check raises ValueError with one line
saying what is wrong. They try for real (open for append, create and remove a temporary
file, bind the port) because permission bits say nothing when running as root.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from .media.sources.device import DeviceSpec, parse_device_spec
from .sinks.eventlog import EventLogError, check_format

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

SUPPORTED_SOURCES = (
    "supported sources: a media file path (audio, video or both), webcam, mic or webcam+mic; "
    "URLs are not supported yet (`stream-mmsa serve` takes a browser's camera and microphone)"
)


def check_media_source(source: str) -> Path | DeviceSpec:
    """An existing file's path or the local devices named; the error says what `run` takes."""
    spec = parse_device_spec(source)
    if spec is not None:
        return spec
    if "://" in source:
        raise ValueError(f"source {_short(source)} is a URL; {SUPPORTED_SOURCES}")
    path = Path(source)
    try:
        info = _stat(path)
    except ValueError as error:
        raise ValueError(f"source {error}") from None
    if info is None:
        raise ValueError(f"source {_short(source)} does not exist; {SUPPORTED_SOURCES}")
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"source {_short(source)} is a directory; {SUPPORTED_SOURCES}")
    return path


def check_jsonl_target(path: str | Path) -> None:
    """A file JsonlSink can append to: an existing writable file or device, or a new file."""
    path = Path(path)
    info = _stat(path)
    if info is None:
        _check_creatable(path)
    elif stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{path} is a directory; give a file path")
    elif stat.S_ISREG(info.st_mode):
        _check_open(path, "ab").close()
    elif not os.access(path, os.W_OK):  # a device or pipe: opening could block or write
        raise ValueError(f"{path} is not writable")


def check_db_target(path: str | Path) -> None:
    """A file EventLog can use: an empty or event-log SQLite file in a writable directory.

    The directory must be writable too: WAL mode keeps -wal and -shm files beside the log.
    """
    path = Path(path)
    info = _stat(path)
    if info is None:
        _check_creatable(path)
        return
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{path} is a directory; give a file path such as {path}/events.sqlite")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    with _check_open(path, "r+b") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header:
        return  # an empty file: the log creates its tables in it
    if header != SQLITE_HEADER:
        raise ValueError(f"{path} is not an SQLite database (refusing to overwrite it)")
    _check_creatable(path)
    try:
        conn = sqlite3.connect(path)
        try:
            check_format(conn, path)
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise ValueError(f"{path} is not a readable SQLite database: {error}") from None
    except EventLogError as error:
        raise ValueError(str(error)) from None


def parse_ws_address(text: str) -> tuple[str, int]:
    """HOST:PORT (or PORT alone, on 127.0.0.1) as (host, port); [::1]:PORT for IPv6."""
    example = "expected HOST:PORT such as 127.0.0.1:8765"
    if "://" in text:
        raise ValueError(f"{text!r}: {example}, without a scheme or path")
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not re.fullmatch(r"-?[0-9]+", port):
        raise ValueError(f"{text!r}: the port {port!r} is not a number; {example}")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port {port} is out of range (0 to 65535)")
    if not re.fullmatch(r"[A-Za-z0-9_.:%-]+", host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or address; {example}")
    return host, int(port)


def check_port_free(host: str, port: int) -> None:
    """Bind every address of host:port as the server will (port 0 checks the host only)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve host {host!r}: {error.strerror}") from None
    for family, kind, proto, _, address in addresses:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:
            continue  # a family this machine lacks; the server skips it likewise
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
            try:
                probe.bind(address)
            except OSError as error:
                raise ValueError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def _stat(path: Path) -> os.stat_result | None:
    """The path's stat, None if it does not exist; other errors (name too long …) as ValueError."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise ValueError(f"{_short(path)}: {error.strerror}") from None


def _check_open(path: Path, mode: str) -> BinaryIO:
    try:
        return path.open(mode)
    except OSError as error:
        raise ValueError(f"cannot write to {path}: {error.strerror}") from None


def _check_creatable(path: Path) -> None:
    """A file can be created at `path`, with its missing directories made as the sinks do."""
    for ancestor in path.parents:
        info = _stat(ancestor)
        if info is not None:
            break
    else:
        raise ValueError(f"{path}: no existing directory above it")
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{ancestor} is not a directory, so {path} cannot be created")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise ValueError(f"cannot create files in {ancestor}: {error.strerror}") from None


def _short(path: str | Path, limit: int = 80) -> str:
    """Paths as typed, but a 300-character name is not repeated in full."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
