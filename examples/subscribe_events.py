"""Print the events of a running engine from its websocket, like any client would.

.venv/bin/stream-mmsa run examples/media/sample.mp4 --ws 127.0.0.1:8765 &
.venv/bin/python examples/subscribe_events.py ws://127.0.0.1:8765/events
"""

import asyncio
import sys

import aiohttp

from stream_mmsa.events import SentimentEvent, parse_event


async def main(url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            event = parse_event(message.data)
            if isinstance(event, SentimentEvent):
                states = " ".join(f"{m}:{r.state}" for m, r in event.modalities.items())
                score = event.sentiment.score
                print(f"#{event.seq} {event.window.end:6.1f}s {score:+.2f} {states}")
            else:
                print(f"#{event.seq} {event.to_json()}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765/events"))
