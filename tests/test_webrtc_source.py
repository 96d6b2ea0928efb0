"""TrackSource on aiortc's own tracks: arrival-time clock, resampling, latest-frame video."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack

from stream_mmsa.config import IceServer
from stream_mmsa.media.frames import AUDIO_RATE, AudioChunk, VideoFrame
from stream_mmsa.sinks.websocket import Subscription
from stream_mmsa.transports.webrtc import TrackSource
from stream_mmsa.transports.webrtc.datachannel import DataChannelSink
from stream_mmsa.transports.webrtc.gateway import Peer, WebRTCGateway, rtc_configuration


class SilentTrack(MediaStreamTrack):
    """A connected peer that sends nothing (a frozen or vanished client)."""

    kind = "audio"

    async def recv(self):
        await asyncio.Event().wait()


class BrokenVideo(MediaStreamTrack):
    """A track whose frames cannot be read (undecodable media)."""

    kind = "video"

    async def recv(self):
        raise RuntimeError("cannot decode this frame")


async def _collect(source: TrackSource, seconds: float) -> list:
    frames = []

    async def take() -> None:
        async for frame in source.frames():
            frames.append(frame)

    task = asyncio.create_task(take())
    await asyncio.sleep(seconds)
    source.stop("test over")
    await task
    await source.close()
    return frames


def test_tracks_become_frames_on_one_session_clock() -> None:
    source = TrackSource([AudioStreamTrack(), VideoStreamTrack()], name="test")
    assert source.has_audio and source.has_video and source.origin is not None
    frames = asyncio.run(_collect(source, 1.2))
    audio = [f for f in frames if isinstance(f, AudioChunk)]
    video = [f for f in frames if isinstance(f, VideoFrame)]
    assert audio and video
    assert all(c.sample_rate == AUDIO_RATE and c.samples.dtype == np.float32 for c in audio)
    starts = np.array([c.time for c in audio])
    ends = np.array([c.end for c in audio])
    np.testing.assert_allclose(starts[1:], ends[:-1], atol=1e-6)  # contiguous samples
    assert 0.6 < ends[-1] - starts[0] < 1.4  # ~ real time, 48 kHz in, 16 kHz out
    times = [f.time for f in video]
    assert times == sorted(times) and 0 <= times[0] < 1.2
    assert video[0].image.ndim == 3 and video[0].image.shape[2] == 3
    assert source.stats.video_frames >= len(video)


def test_a_peer_that_sends_nothing_ends_after_the_idle_timeout() -> None:
    source = TrackSource([SilentTrack()], name="idle", idle_timeout=0.3)

    async def run() -> list:
        return [frame async for frame in source.frames()]

    assert asyncio.run(asyncio.wait_for(run(), 5)) == []
    assert source.ended_because == "no media for 0.3 s"


def test_ended_tracks_end_the_source() -> None:
    audio = AudioStreamTrack()

    async def run() -> str | None:
        source = TrackSource([audio], name="ending")
        asyncio.get_running_loop().call_later(0.3, audio.stop)
        async for _ in source.frames():
            pass
        return source.ended_because

    assert asyncio.run(asyncio.wait_for(run(), 5)) == "tracks ended"


def test_a_failing_track_ends_alone() -> None:
    source = TrackSource([AudioStreamTrack(), BrokenVideo()], name="half-broken")
    frames = asyncio.run(_collect(source, 0.6))
    assert frames and all(isinstance(f, AudioChunk) for f in frames)
    assert source.ended_because == "test over"  # not ended by the broken video


def test_a_source_needs_a_media_track() -> None:
    with pytest.raises(ValueError, match="audio or a video"):
        TrackSource([], name="empty")


class _Query(dict):
    def getall(self, key: str, default: list) -> list:
        return self.get(key, default)


def test_subscriptions_by_session_room_and_resume_points() -> None:
    sub = Subscription.from_query(_Query(session=["a"], after=["41"]))
    assert sub.after == {"a": 41}
    sub = Subscription.from_query(_Query(room=["r"], after=["a:3", "b:-1"]))
    assert sub.rooms == {"r"} and sub.after == {"a": 3, "b": -1}
    for bad in (_Query(after=["3"]), _Query(session=["a"], after=["x"]), _Query(after=["a:-5"])):
        with pytest.raises(ValueError):
            Subscription.from_query(bad)


def test_the_server_side_uses_the_configured_ice_servers() -> None:
    assert rtc_configuration([]) is None
    stun = IceServer(urls=["stun:stun.example.org:3478"])
    turn = IceServer(urls=["turn:turn.example.org:3478"], username="u", credential="c")
    servers = rtc_configuration([stun, turn]).iceServers
    assert [s.urls for s in servers] == [
        ["stun:stun.example.org:3478"],
        ["turn:turn.example.org:3478"],
    ]
    assert (servers[1].username, servers[1].credential) == ("u", "c")


def test_shutdown_cancels_a_session_that_does_not_end(caplog: pytest.LogCaptureFixture) -> None:
    """A session stuck in its cleanup (e.g. a model thread that never returns) gets
    `shutdown_grace` seconds, then is cancelled, so the server still stops."""

    class StuckSession:
        def stop(self, reason: str) -> None:
            self.reason = reason

    async def check() -> None:
        gateway = WebRTCGateway(None, [], shutdown_grace=0.2)  # type: ignore[arg-type]
        source = TrackSource([AudioStreamTrack()], name="stuck")
        peer = Peer(RTCPeerConnection(), source, StuckSession(), DataChannelSink())  # type: ignore[arg-type]
        peer.task = asyncio.create_task(asyncio.Event().wait(), name="session-stuck")
        gateway.peers["stuck"] = peer
        started = asyncio.get_running_loop().time()
        await gateway.close()
        assert asyncio.get_running_loop().time() - started < 5
        assert peer.task.cancelled()
        assert peer.session.reason == "server shutting down"
        await peer.pc.close()

    asyncio.run(check())
    assert "session-stuck did not end within 0.2 s; cancelled" in caplog.text
