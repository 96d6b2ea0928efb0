"""`stream-mmsa bench --stages sessions`: N live sessions at once, files and WebRTC peers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stream_mmsa.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--sessions", "1,x", "--sessions: a comma list of whole numbers"),
        ("--sessions", "0,4", "--sessions: a comma list of whole numbers >= 1"),
        ("--transports", "file,carrier-pigeon", "--transports: choose from file, webrtc"),
    ],
)
def test_bench_sessions_refuses_bad_options(option: str, value: str, message: str) -> None:
    result = runner.invoke(app, ["bench", "--stages", "sessions", option, value])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.slow
def test_sessions_keep_cadence_on_files_and_webrtc(tmp_path: Path) -> None:
    """A short clip of continuous MOSI speech with a face: two file sessions and one WebRTC
    peer each get every window, with latencies and the engine's CPU measured."""
    from stream_mmsa.bench.sessions import make_clip, run_sessions
    from stream_mmsa.bench.speech import MOSI_LABELS
    from stream_mmsa.config import EngineConfig
    from stream_mmsa.engine import Runtime

    if not MOSI_LABELS.exists():
        pytest.skip("needs ../shared/data (MOSI transcripts)")
    clip = make_clip(tmp_path, duration_s=5.0)

    async def run() -> list:
        async with Runtime(EngineConfig()) as runtime:
            return [
                await run_sessions(runtime, clip, 2, "file"),
                await run_sessions(runtime, clip, 1, "webrtc"),
            ]

    files, webrtc = asyncio.run(run())
    assert files.sessions_seen == 2 and webrtc.sessions_seen == 1
    for result in (files, webrtc):
        assert result.windows_due >= 10 and result.windows_per_session >= result.windows_due - 1
        assert result.latency_p95_ms is not None and result.latency_p50_ms > 0
        assert 0 < result.cores_per_session < 4
    assert webrtc.peer_cores is not None and webrtc.peer_cores > 0
