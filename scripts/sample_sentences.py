"""The bundled sample's six sentences: the engine's mean score for each, real time and --fast.

    .venv/bin/python scripts/sample_sentences.py [--readme]

Runs the sample through the engine both ways (real time is 35 s) and prints, per sentence,
the mean score of the windows that heard it (stream_mmsa.demo.sentence_readings); with
--readme it writes the table into README.md's `sample-sentences` block.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from stream_mmsa.config import EngineConfig
from stream_mmsa.demo import AFTER_S, HEARD_S, SentenceReading, sample_sentences, sentence_readings
from stream_mmsa.live import file_events
from stream_mmsa.paths import SAMPLE
from stream_mmsa.train.readme import publish


async def readings(realtime: bool) -> list[SentenceReading]:
    events = await file_events(EngineConfig(), SAMPLE, realtime)
    return sentence_readings(events, sample_sentences())


def table(live: list[SentenceReading], fast: list[SentenceReading]) -> str:
    lines = [
        "| sentence | spoken as | mean score, real time | mean score, --fast |",
        "|---|---|---|---|",
    ]
    for a, b in zip(live, fast, strict=True):
        marks = ["" if r.agrees else " (wrong sign)" for r in (a, b)]
        lines.append(
            f"| {a.text} | {a.polarity} | {a.mean:+.2f}{marks[0]} | {b.mean:+.2f}{marks[1]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="write README.md's block")
    args = parser.parse_args()
    live = asyncio.run(readings(realtime=True))
    fast = asyncio.run(readings(realtime=False))
    body = (
        f"`.venv/bin/python scripts/sample_sentences.py --readme` (load "
        f"{os.getloadavg()[0]:.1f}): mean score of the windows ending between {HEARD_S:g} s "
        f"into a sentence and {AFTER_S:g} s after it.\n\n{table(live, fast)}\n"
    )
    publish("sample-sentences", body, write=args.readme)


if __name__ == "__main__":
    main()
