"""MOSI valid as one continuous talk through the engine: how live windows read a speaker who
goes on talking.

`spoken eval` plays every utterance alone between silences. A person on camera talks on, a
0.7 s breath between sentences (shorter than the pause that starts a new utterance), so a
window's text may carry the tail of the sentence before, and whisper's full stops fall where
the speaker made none. Here every MOSI valid transcript is spoken back to back in four
voices (`bench.speech.make_continuous_speech`), played through a real Session as
`run --fast` plays a file and (`--realtime`) at its own pace, as a microphone gives it,
audio only (vision is missing throughout), and each window is scored against the label of
the utterance it ends in (from 1 s into it to 0.5 s after it, as the sample's sentences are
read: `demo.sentence_scores`).

    python -m stream_mmsa.train.continuous --config configs/engine.yaml [--realtime]
        [--set K=V ...] [--against K=V ...] [--readme]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..bench.speech import MOSI_LABELS, VOICES, make_continuous_speech, mosi_rows
from ..config import EngineConfig, load_config
from ..demo import sentence_scores
from ..live import file_events
from ..paths import cache_root
from ..windowing import window_count
from .readme import publish
from .spoken import Scored, grouped_metrics, interval_text, metrics_table, paired_bootstrap

GAP_S = 0.7
"""Silence between utterances: a breath, shorter than WindowConfig.utterance_gap."""


def continuous_clip(
    duration_s: float = math.inf, labels: Path = MOSI_LABELS
) -> tuple[Path, list[dict]]:
    """MOSI valid spoken as one talk of about `duration_s` (all of it by default; made once,
    cached) and its utterances with their times."""
    key = json.dumps([mosi_rows(labels), VOICES, GAP_S, duration_s], sort_keys=True)
    directory = cache_root() / "continuous" / hashlib.sha1(key.encode()).hexdigest()[:12]
    wav = directory / "continuous.wav"
    if not wav.with_suffix(".json").is_file():
        print(f"speaking MOSI valid into {wav} (once)")
        make_continuous_speech(directory, duration_s, GAP_S, labels)
    return wav, json.loads(wav.with_suffix(".json").read_text())["sentences"]


async def _events(engine: EngineConfig, wav: Path, duration: float, realtime: bool) -> list[dict]:
    bar = tqdm(total=window_count(duration, engine.window.hop), desc="windows", unit="win")
    try:
        return await file_events(
            engine, wav, realtime, lambda event: bar.update(event.type == "sentiment")
        )
    finally:
        bar.close()


def score_talk(
    engine: EngineConfig, duration_s: float = math.inf, realtime: bool = False
) -> Scored:
    """Every window that falls in an utterance of the talk: its score, the utterance's
    label, and the positions of each utterance's windows. `realtime`: played at its own
    pace, with the recogniser's lag and late text as live (as long as the talk takes)."""
    wav, utterances = continuous_clip(duration_s)
    events = asyncio.run(_events(engine, wav, utterances[-1]["end"] + GAP_S, realtime))
    pred, label, groups = [], [], {}
    for utterance, scores in zip(utterances, sentence_scores(events, utterances), strict=True):
        if scores:
            groups[utterance["id"]] = list(range(len(pred), len(pred) + len(scores)))
            pred += scores
            label += [utterance["label"]] * len(scores)
    return np.array(pred, np.float32), np.array(label, np.float32), groups


def _metrics(scored: Scored) -> dict[str, dict[str, float]]:
    pred, label, groups = scored
    return grouped_metrics(torch.from_numpy(pred), torch.from_numpy(label), groups)


def readme_block(
    rows: dict[str, dict[str, dict[str, float]]],
    checkpoint: Path,
    set_: Sequence[str],
    against: Sequence[str] | None,
    differences: dict[str, dict],
) -> str:
    """README's continuous-MOSI table, a row per pace ("--fast", "real time") and level,
    with the command and, given a baseline, the paired intervals at each pace."""
    command = "python -m stream_mmsa.train.continuous --config configs/engine.yaml --readme"
    command += " --realtime" if "real time" in rows else ""
    command += "".join(f" --set {s}" for s in set_)
    if against:
        command += " --against " + " ".join(against)
    lines = [
        f"`{command}` (load {os.getloadavg()[0]:.1f}): `{checkpoint.name}` on MOSI **valid** "
        f"(selection set) spoken as one talk, {len(VOICES)} voices in turn, {GAP_S:g} s between "
        "utterances, audio only; a window counts for the utterance it ends in.",
        "",
        *metrics_table("MOSI valid as one talk", rows),
    ]
    for pace, difference in differences.items():
        lines += [
            "",
            f"{pace}, minus `{' '.join(against or [])}`, paired over "
            f"{difference['utterances']['count']:.0f} utterances (95 % bootstrap intervals): "
            + interval_text(difference)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/engine.yaml"))
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE", help="overrides to try"
    )
    parser.add_argument(
        "--against",
        nargs="+",
        metavar="SECTION.KEY=VALUE",
        help="the config with these overrides instead is the baseline (e.g. "
        "engine.window.utterance_gap=0.8); prints the paired difference with intervals",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="also play the talk at its own pace (as long as it is, ~14 min), recogniser lag "
        "and late text included, and report those windows too (and --against's, paired)",
    )
    parser.add_argument("--readme", action="store_true", help="write README.md's block")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    torch.set_num_threads(config.train.threads)
    paces = {"--fast": False} | ({"real time": True} if args.realtime else {})
    tried = {pace: score_talk(config.engine, realtime=live) for pace, live in paces.items()}
    rows = {pace: _metrics(scored) for pace, scored in tried.items()}
    print(json.dumps(rows, indent=2))
    differences = {}
    if args.against:
        baseline = load_config(args.config, args.against).engine
        for pace, live in paces.items():
            differences[pace] = paired_bootstrap(tried[pace], score_talk(baseline, realtime=live))
        print(json.dumps(differences, indent=2))
    if args.readme:
        checkpoint = config.engine.checkpoint or EngineConfig().checkpoint
        publish(
            "continuous-mosi",
            readme_block(rows, checkpoint, args.set, args.against, differences),
        )


if __name__ == "__main__":
    main()
