"""Sessions per box: N live sessions at once, on continuous speech with a face.

Each session is what a user of the engine runs: a real-time `Session` reading a file
(`file`), or a browser-like aiortc peer publishing over WebRTC to the server `serve` runs
(`webrtc`). The peers run in a child process, so the CPU reported per session is the
engine's own (the server decodes, analyses and sends); the peers' CPU (video encoding) is
reported beside it. The clip is continuous speech made from MOSI valid transcripts in
several espeak-ng voices (bench/speech.py) under the bundled sample's face video, looped.

Reported per N: CPU cores per session (process CPU time / (N × wall time)), event latency
after window end (p50/p95, the first window's warm-up excluded), cadence (windows emitted
/ windows due, and the share emitted before the next window closed), and how often the
text was late (the recogniser behind).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..config import EngineConfig
from ..media.frames import AUDIO_RATE
from ..paths import SAMPLE
from ..windowing import window_count
from .common import percentile
from .engine import LoopLag

TRANSPORTS = ("file", "webrtc")
WARMUP_S = 4.0
"""Windows ending before this are the first window filling up: not counted in latency."""

Events = dict[str, list[dict]]
"""Each session's events as JSON objects, by session (file) or peer (webrtc)."""


@dataclass
class SessionsPlan:
    """What the sessions stage runs: each N on each transport, on `source` or a made clip."""

    counts: list[int]
    transports: list[str]
    source: Path | None = None
    clip_seconds: float = 60.0
    runs: int = 1


@dataclass
class SessionsResult:
    """One N: what the box did with N sessions at once."""

    transport: str
    sessions: int
    sessions_seen: int
    """Sessions that sent events (a peer that failed to connect sends none)."""
    seconds: float
    cores_per_session: float
    peer_cores: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    windows_per_session: float
    windows_due: int
    on_time: float
    """Share of windows whose event left before the next window closed (latency ≤ hop)."""
    text_late: float
    audio_late: float
    """Windows whose audio had not been read yet: the session fell behind real time."""
    load: tuple[float, float, float]
    extra: dict[str, float] = field(default_factory=dict)
    loop_lag_p99_ms: float | None = None
    """How late the event loop (every session's pump, the network) woke a 10 ms sleep."""


def make_clip(directory: str | Path, duration_s: float = 60.0) -> Path:
    """Continuous MOSI-valid speech muxed under the sample's face video (looped).

    Needs ../shared/data (the MOSI transcripts) and espeak-ng. H.264 and Opus in MPEG-TS,
    the codecs a browser sends, so WebRTC peers forward the packets as they are instead of
    re-encoding them on the machine being measured (Annex B H.264, headers on each key frame).
    """
    from .speech import load_audio, make_continuous_speech

    directory = Path(directory)
    wav, _ = make_continuous_speech(directory, duration_s)
    audio = load_audio(wav)
    frames = _sample_video()
    out = directory / "continuous.ts"
    rate, opus_rate = 15, 48000
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        video.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "profile": "baseline",
            "x264-params": f"keyint={2 * rate}:repeat-headers=1",
        }
        sound = container.add_stream("libopus", rate=opus_rate)
        sound.layout = "mono"
        shown = 0
        # Interleaved by time, as a camera and microphone deliver them: a TS file is read
        # in the order it was written.
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        resample = av.AudioResampler(format="s16", layout="mono", rate=opus_rate, frame_size=960)
        step = AUDIO_RATE // 50
        for start in range(0, len(pcm) + step, step):  # one past the end flushes the resampler
            piece, chunk = pcm[start : start + step], None
            if len(piece):
                chunk = av.AudioFrame.from_ndarray(piece[None, :], format="s16", layout="mono")
                chunk.sample_rate, chunk.pts = AUDIO_RATE, start
                chunk.time_base = Fraction(1, AUDIO_RATE)
            for resampled in resample.resample(chunk):
                container.mux(sound.encode(resampled))
            while chunk is not None and shown / rate <= (start + step) / AUDIO_RATE:
                frame = frames[shown % len(frames)].reformat(format="yuv420p")
                frame.pts, frame.time_base = shown, Fraction(1, rate)
                container.mux(video.encode(frame))
                shown += 1
        container.mux(sound.encode())
        container.mux(video.encode())
    return out


def _sample_video() -> list[av.VideoFrame]:
    with av.open(str(SAMPLE)) as container:
        return list(container.decode(video=0))


async def run_sessions(runtime, clip: Path, sessions: int, transport: str) -> SessionsResult:
    """N sessions on `clip` at real-time pace, all at once."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
    load = os.getloadavg()
    lag = LoopLag()
    monitor = asyncio.create_task(lag.run())
    started, cpu = time.monotonic(), time.process_time()
    drops: dict[str, float] = {}
    try:
        if transport == "file":
            events, peer_cpu = await _file_sessions(runtime, clip, sessions), None
        else:
            events, peer_cpu, drops = await _webrtc_sessions(runtime, clip, sessions)
    finally:
        monitor.cancel()
    wall, used = time.monotonic() - started, time.process_time() - cpu
    due = window_count(_duration(clip), runtime.config.window.hop)
    hop = runtime.config.window.hop
    result = _summarise(events, hop, transport, sessions, due, wall, used, load)
    result.peer_cores = None if peer_cpu is None else peer_cpu / wall
    result.extra.update(drops)
    result.loop_lag_p99_ms = percentile(lag.samples, 99)
    return result


def _summarise(
    events: Events,
    hop: float,
    transport: str,
    sessions: int,
    due: int,
    wall: float,
    cpu: float,
    load: tuple[float, float, float],
) -> SessionsResult:
    """`due`: windows the clip holds; a session that fell behind real time emits more
    (the cadence runs on while its media is read late), each with every modality late."""
    windows = {s: [e for e in evs if e["type"] == "sentiment"] for s, evs in events.items()}
    counted = [e for evs in windows.values() for e in evs if e["window"]["end"] > WARMUP_S]
    latencies = [e["latency_ms"] for e in counted]
    late = {m: _share_late(counted, m) for m in ("text", "audio")}
    sent = [len(evs) for evs in windows.values()]
    return SessionsResult(
        transport=transport,
        sessions=sessions,
        sessions_seen=len(windows),
        seconds=round(wall, 1),
        cores_per_session=cpu / wall / sessions,
        peer_cores=None,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        windows_per_session=float(np.mean(sent)) if sent else 0.0,
        windows_due=due,
        on_time=float(np.mean([lat <= hop * 1000 for lat in latencies])) if latencies else 0.0,
        text_late=late["text"],
        audio_late=late["audio"],
        load=load,
    )


def _share_late(windows: list[dict], modality: str) -> float:
    states = Counter(e["modalities"][modality]["state"] for e in windows)
    return states["late"] / max(1, sum(states.values()))


async def _file_sessions(runtime, clip: Path, sessions: int) -> Events:
    from ..engine import Session
    from ..media.sources.file import FileSource
    from ..sinks.group import SinkGroup

    events: Events = {}

    def keep(event) -> None:
        events.setdefault(event.session, []).append(event.model_dump(mode="json"))

    async with SinkGroup([]) as sink:
        runs = [
            Session(runtime, FileSource(clip, realtime=True), sink, on_event=keep).run()
            for _ in range(sessions)
        ]
        await asyncio.gather(*runs)
    return events


async def _webrtc_sessions(
    runtime, clip: Path, sessions: int
) -> tuple[Events, float, dict[str, float]]:
    """The server in this process on loopback; the N peers in a child process.

    Also returns what the server's sources threw away (latest-frame video, audio over the
    backlog), sampled while the peers are connected (a session's counters go with it)."""
    import tempfile

    from aiohttp import web

    from ..config import ServerConfig
    from ..server.app import GATEWAY, build_app

    token = "bench-" + "x" * 16
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(db=Path(tmp) / "events.sqlite", max_sessions=sessions)
        app = build_app(runtime, config, token)
        runner = web.AppRunner(app)
        await runner.setup()
        drops: dict[str, float] = {}
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()  # any free port: asked below
            port = runner.addresses[0][1]
            duration = _duration(clip)
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:
                url = f"http://127.0.0.1:{port}"
                args = (url, token, str(clip), sessions, duration)
                job = pool.apply_async(_publish_process, args)
                watcher = asyncio.create_task(_watch_drops(app[GATEWAY], drops))
                try:
                    events, peer_cpu = await asyncio.get_running_loop().run_in_executor(
                        None, job.get, duration + 120
                    )
                finally:
                    watcher.cancel()
        finally:
            await runner.cleanup()
    return events, peer_cpu, drops


async def _watch_drops(gateway, into: dict[str, float]) -> None:
    """The gateway's frame counters, last seen with sessions running (polled each second)."""
    while True:
        stats = gateway.stats()
        if stats.video_frames:
            into["video_replaced"] = stats.video_replaced / stats.video_frames
            into["audio_dropped"] = float(stats.audio_dropped)
        await asyncio.sleep(1.0)


def _duration(clip: Path) -> float:
    with av.open(str(clip)) as container:
        return float(container.duration or 0) / av.time_base


def _forwardable(clip: str) -> bool:
    """Whether a peer can send the clip's packets without re-encoding (H.264 + Opus)."""
    with av.open(clip) as container:
        names = {s.type: s.codec_context.name for s in container.streams}
    return names.get("video") == "h264" and names.get("audio") == "opus"


def _prefer(pc, mime: str) -> None:
    from aiortc import RTCRtpSender

    codecs = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in codecs if c.mimeType == mime or c.mimeType == "video/rtx"]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences(chosen)


def _publish_process(
    url: str, token: str, clip: str, sessions: int, seconds: float
) -> tuple[Events, float]:
    """Child process: N peers publish the clip, collect their events; returns them + CPU."""
    started = time.process_time()
    events = asyncio.run(_publish(url, token, clip, sessions, seconds))
    return events, time.process_time() - started


async def _publish(url: str, token: str, clip: str, sessions: int, seconds: float) -> Events:
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    events: Events = {}
    peers = []
    forward = _forwardable(clip)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for n in range(sessions):
            pc = RTCPeerConnection()
            player = MediaPlayer(clip, decode=not forward)
            pc.addTrack(player.audio)
            pc.addTrack(player.video)
            if forward:  # the packets are H.264: negotiate it, not aiortc's first choice VP8
                _prefer(pc, "video/H264")
            channel = pc.createDataChannel("events")
            received = events.setdefault(f"peer{n}", [])
            channel.on("message", lambda message, into=received: into.append(json.loads(message)))
            await pc.setLocalDescription(await pc.createOffer())
            offer = {"sdp": pc.localDescription.sdp, "type": "offer", "room": "bench"}
            async with http.post(f"{url}/offer", json=offer) as response:
                response.raise_for_status()
                answer = await response.json()
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            peers.append(pc)
        await asyncio.sleep(seconds)
        await asyncio.gather(*(pc.close() for pc in peers))
    return events


def bench_sessions(plan: SessionsPlan, config: EngineConfig) -> dict:
    """Every (transport, N) of the plan in turn on one runtime; returns rows for `markdown`.

    Without a source the clip is made from MOSI valid (needs ../shared/data and espeak-ng);
    where that data is absent the bundled sample stands in, and the result says so.
    """
    import tempfile

    from .speech import MOSI_LABELS

    with tempfile.TemporaryDirectory() as tmp:
        if plan.source is not None:
            clip = plan.source
        elif MOSI_LABELS.exists():
            clip = make_clip(tmp, plan.clip_seconds)
        else:
            clip = SAMPLE
        seconds = _duration(clip)
        rows = asyncio.run(_all(plan, config, clip))
    made = plan.source is None and clip != SAMPLE
    described = f"{seconds:.0f} s of continuous MOSI valid speech" if made else str(clip)
    return {"clip": described, "cpus": os.cpu_count(), "rows": rows}


async def _all(plan: SessionsPlan, config: EngineConfig, clip: Path) -> list[dict]:
    from ..engine import Runtime

    rows = []
    async with Runtime(config) as runtime:
        for run in range(1, plan.runs + 1):
            for transport in plan.transports:
                for n in plan.counts:
                    result = await run_sessions(runtime, clip, n, transport)
                    rows.append({"run": run, **asdict(result)})
    return rows


def markdown(results: dict) -> str:
    """One row per (transport, N); several runs side by side as run 1 / run 2 / …"""
    header = (
        "| transport | sessions | cores/session | event p50 ms | event p95 ms "
        "| windows/session (due) | on time | text late | audio late "
        "| frames replaced, audio dropped | peers' cores | loop lag p99 ms "
        "| load (1 min) |"
    )
    lines = [header, "|---" * 13 + "|"]
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in results["rows"]:
        groups.setdefault((row["transport"], row["sessions"]), []).append(row)
    for (transport, n), rows in groups.items():
        cells = [transport, str(n)] + [" / ".join(c) for c in zip(*map(_cells, rows), strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cells(r: dict) -> list[str]:
    """One run's figures, in the table's column order after transport and N."""
    return [
        f"{r['cores_per_session']:.2f}",
        _ms(r["latency_p50_ms"]),
        _ms(r["latency_p95_ms"]),
        f"{r['windows_per_session']:.0f} ({r['windows_due']})",
        f"{r['on_time']:.0%}",
        f"{r['text_late']:.0%}",
        f"{r['audio_late']:.0%}",
        _drops(r),
        "–" if r["peer_cores"] is None else f"{r['peer_cores']:.2f}",
        _ms(r.get("loop_lag_p99_ms")),
        f"{r['load'][0]:.1f}",
    ]


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _drops(row: dict) -> str:
    extra = row["extra"]
    if "video_replaced" not in extra:
        return "–"
    return f"{extra['video_replaced']:.0%}, {extra['audio_dropped']:.0f}"


def readme_block(results: dict, command: str, host: str = "") -> str:
    """The README's sessions table: the command, the clip, the machine (`host`: how fast
    it ran, bench.suite.host_line), the figures."""
    return (
        f"`{command}` on {results['clip']}, {results['cpus']} CPUs "
        f"(run 1 / run 2 / …; the first 4 s of each session excluded from latency; "
        f"cores/session = the engine process's CPU time / (N × wall time); WebRTC peers run "
        f"in a child process, not counted):\n\n{markdown(results)}\n"
        + (f"\n{host}\n" if host else "")
    )
