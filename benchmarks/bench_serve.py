"""`stream-mmsa serve` under load: N conferencing peers over real WebRTC on loopback.

    .venv/bin/python benchmarks/bench_serve.py [--sessions 1 2 4] [--seconds 25]

For each N, an in-process server (the same app `serve` runs) takes N aiortc peers that
publish the bundled sample in real time, like a conferencing backend forwarding N
participants. Reported per N: event latency after window end (p50/p95, from the events
themselves, warm-up windows excluded), events per session, video frames replaced
(latest-frame drops) and audio dropped, from the server's own counters. Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from stream_mmsa.config import EngineConfig, ServerConfig
from stream_mmsa.engine import Runtime
from stream_mmsa.server.app import GATEWAY, build_app
from stream_mmsa.transports.webrtc import OfferRequest

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "media" / "sample.mp4"
WARMUP_S = 4.0


async def _peer(
    app: web.Application, latencies: list[float], counts: list[int]
) -> RTCPeerConnection:
    """One participant: offer straight to the gateway (HTTP costs nothing worth measuring)."""
    pc = RTCPeerConnection()
    player = MediaPlayer(str(SAMPLE))
    pc.addTrack(player.audio)
    pc.addTrack(player.video)
    channel = pc.createDataChannel("events")

    @channel.on("message")
    def on_message(message: str) -> None:
        event = json.loads(message)
        counts[0] += 1
        if event["type"] == "sentiment" and event["window"]["end"] > WARMUP_S:
            latencies.append(event["latency_ms"])

    await pc.setLocalDescription(await pc.createOffer())
    offer = OfferRequest(sdp=pc.localDescription.sdp, type="offer", room="bench")
    answer = await app[GATEWAY].accept(offer)
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    return pc


async def measure(runtime: Runtime, sessions: int, seconds: float, db: Path) -> dict[str, float]:
    app = build_app(runtime, ServerConfig(db=db, max_sessions=sessions), token="x" * 16)
    runner = web.AppRunner(app)
    await runner.setup()
    latencies: list[float] = []
    counts = [0]
    peers = [await _peer(app, latencies, counts) for _ in range(sessions)]
    await asyncio.sleep(seconds)
    stats = app[GATEWAY].stats()
    await asyncio.gather(*(pc.close() for pc in peers))
    await runner.cleanup()
    return {
        "sessions": sessions,
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "windows": len(latencies) / sessions,
        "events": counts[0] / sessions,
        "video_replaced": stats.video_replaced / max(1, stats.video_frames),
        "audio_dropped": stats.audio_dropped,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=25.0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Runtime(EngineConfig()) as runtime:
            for n in args.sessions:
                rows.append(await measure(runtime, n, args.seconds, Path(tmp) / f"{n}.sqlite"))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    header = ["sessions", "latency p50 ms", "p95 ms", "windows/session", "events/session"]
    header += ["video frames replaced", "audio dropped"]
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for r in rows:
        print(
            f"| {r['sessions']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['windows']:.0f} | "
            f"{r['events']:.0f} | {r['video_replaced']:.0%} | {r['audio_dropped']} |"
        )
    if len(rows) > 1:
        ratio = rows[-1]["p95"] / rows[0]["p95"]
        print(f"p95 ratio, {rows[-1]['sessions']} sessions vs 1: {ratio:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
