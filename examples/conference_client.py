"""A conferencing backend's side: publish participants' media to a room, read sentiment back.

Each participant gets its own peer connection to `stream-mmsa serve` (its tracks are one
engine session) with an `events` data channel on which that participant's events come
back. Here two participants play media files; a real integration forwards the tracks of
its call (an SFU's subscriber side) the same way.

    .venv/bin/stream-mmsa serve --token my-secret-token-123 &
    .venv/bin/python examples/conference_client.py --token my-secret-token-123 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

SAMPLE = Path(__file__).parent / "media" / "sample.mp4"


async def publish(
    http: aiohttp.ClientSession, server: str, token: str, room: str, participant: str, media: Path
) -> RTCPeerConnection:
    """Send one participant's audio and video; print every event that comes back."""
    pc = RTCPeerConnection()
    player = MediaPlayer(str(media))
    for track in (player.audio, player.video):
        if track is not None:
            pc.addTrack(track)
    channel = pc.createDataChannel("events")

    @channel.on("message")
    def on_message(message: str) -> None:
        event = json.loads(message)
        who = f"{event.get('room')}/{event.get('participant')}"
        if event["type"] == "sentiment":
            s = event["sentiment"]
            print(f"{who:>16} #{event['seq']:<4} {s['score']:+.2f} {s['label']}")
        elif event["type"] == "transcript" and event["final"]:
            print(f"{who:>16} #{event['seq']:<4} said: {event['text']}")

    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers candidates here
    body = {"sdp": pc.localDescription.sdp, "type": "offer", "room": room}
    body["participant"] = participant
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{server}/offer", json=body, headers=headers) as response:
        answer = await response.json()
        if response.status != 200:
            raise SystemExit(
                f"{participant}: {response.status} {answer['error']}: {answer['message']}"
            )
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    print(f"{participant} joined {room} as session {answer['session']}")
    return pc


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    parser.add_argument("--token", required=True)
    parser.add_argument("--room", default="standup")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to stay in the call")
    parser.add_argument("--media", type=Path, nargs=2, default=[SAMPLE, SAMPLE])
    args = parser.parse_args()
    async with aiohttp.ClientSession() as http:
        peers = [
            await publish(http, args.server, args.token, args.room, name, media)
            for name, media in zip(("alice", "bob"), args.media, strict=True)
        ]
        await asyncio.sleep(args.seconds)
        await asyncio.gather(*(pc.close() for pc in peers))


if __name__ == "__main__":
    asyncio.run(main())
