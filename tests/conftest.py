"""Shared test constants and helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from stream_mmsa.sinks.base import AnyEvent, Sink

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.test_utils import TestClient


class Recorder(Sink):
    """A sink that keeps every event it gets, like a client would."""

    def __init__(self) -> None:
        self.events: list[AnyEvent] = []

    async def send(self, event: AnyEvent) -> None:
        self.events.append(event)

    async def close(self) -> None:
        pass


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""Real data for development (../shared/data from the repo root); absent on some machines."""

TOKEN = "test-token-0123456789abcdef"
"""The access token of the servers under test."""
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def post_offer(
    http: aiohttp.ClientSession | TestClient, url: str, body: object, headers: dict | None = None
) -> tuple[int, dict]:
    """POST `body` (JSON-encoded unless bytes or str) to url/offer: status and JSON answer."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with http.post(url + "/offer", data=data, headers=headers) as response:
        return response.status, await response.json()


def write_mmsa_pickle(path: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """A random pickle in MMSA's processed schema (MOSI dims 768/5/20), labels tied to text.

    Not data: it exercises loading, training and evaluation end to end.
    """
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(768).astype(np.float32)
    data = {}
    for split, n in sizes.items():
        labels = rng.uniform(-3, 3, n).astype(np.float32)
        lengths = rng.integers(3, 12, (3, n))
        text = rng.standard_normal((n, 12, 768)).astype(np.float32)
        text += labels[:, None, None] * direction * 0.3
        text_bert = np.zeros((n, 3, 12), dtype=np.int64)
        for i in range(n):
            text_bert[i, 1, : lengths[0, i]] = 1
        data[split] = {
            "raw_text": [f"clip {i}" for i in range(n)],
            "text": text,
            "text_bert": text_bert,
            "audio": rng.standard_normal((n, 12, 5)).astype(np.float32),
            "vision": rng.standard_normal((n, 12, 20)).astype(np.float32),
            "audio_lengths": lengths[1].tolist(),
            "vision_lengths": lengths[2],
            "id": np.array([f"{split}{i}$_$1" for i in range(n)]),
            "regression_labels": labels,
        }
    with path.open("wb") as handle:
        pickle.dump(data, handle)
    return path
