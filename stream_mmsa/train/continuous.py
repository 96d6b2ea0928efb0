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
read: `demo.sentence_windows`).

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
from ..demo import sentence_windows
from ..features.asr.guards import normalize_word
from ..live import file_events
from ..paths import cache_root
from ..windowing import window_count
from .metrics import mosi_metrics
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


def talk_events(
    engine: EngineConfig, duration_s: float = math.inf, realtime: bool = False
) -> tuple[list[dict], list[dict]]:
    """The talk's events through one session, and its utterances with their times.
    `realtime`: played at its own pace, with the recogniser's lag and late text as live
    (as long as the talk takes)."""
    wav, utterances = continuous_clip(duration_s)
    return asyncio.run(_events(engine, wav, utterances[-1]["end"] + GAP_S, realtime)), utterances


def score_windows(events: list[dict], utterances: list[dict]) -> tuple[Scored, list[str]]:
    """Every window that falls in an utterance: its score, the utterance's label and the
    positions of each utterance's windows; and each such window's transcript, in order."""
    pred, label, texts, groups = [], [], [], {}
    for utterance, windows in zip(utterances, sentence_windows(events, utterances), strict=True):
        if windows:
            groups[utterance["id"]] = list(range(len(pred), len(pred) + len(windows)))
            pred += [e["sentiment"]["score"] for e in windows]
            texts += [e["transcript"] for e in windows]
            label += [utterance["label"]] * len(windows)
    return (np.array(pred, np.float32), np.array(label, np.float32), groups), texts


def score_talk(
    engine: EngineConfig, duration_s: float = math.inf, realtime: bool = False
) -> Scored:
    """`score_windows` of the talk's events (`talk_events`), without the texts."""
    return score_windows(*talk_events(engine, duration_s, realtime))[0]


TEXT_RELATIONS = {
    "same": "the same words",
    "behind": "a beginning of the --fast text (words not yet heard)",
    "other words": "the same start, other words after it",
    "starts elsewhere": "another start (such as the sentence before, its end not yet known)",
}
"""How a live window's text relates to the --fast window's, in the order they are tested."""


def text_relation(live: str, fast: str) -> str:
    """Which of TEXT_RELATIONS the live window's text is to the --fast one (words compared
    without case or punctuation)."""
    live_words = [w for w in map(normalize_word, live.split()) if w]
    fast_words = [w for w in map(normalize_word, fast.split()) if w]
    if live_words == fast_words:
        return "same"
    if fast_words[: len(live_words)] == live_words:
        return "behind"
    if live_words and fast_words and live_words[0] == fast_words[0]:
        return "other words"
    return "starts elsewhere"


def text_breakdown(
    fast: tuple[Scored, list[str]], live: tuple[Scored, list[str]]
) -> dict[str, dict[str, float]]:
    """Per TEXT_RELATIONS class of the live windows: their share, Non0_acc_2 and MAE at both
    paces, how many words the live text is short of the --fast one, and the class's part of
    the Non0_acc_2 gap (its share of the nonzero-labelled windows × its accuracy difference:
    the parts add up to the whole gap)."""
    (fast_pred, label, groups), fast_texts = fast
    (live_pred, _, live_groups), live_texts = live
    if live_groups != groups:
        raise ValueError("the live talk's windows are not the --fast talk's: cannot pair them")
    relations = np.array([text_relation(a, b) for a, b in zip(live_texts, fast_texts, strict=True)])
    shortfall = np.array(
        [len(b.split()) - len(a.split()) for a, b in zip(live_texts, fast_texts, strict=True)]
    )
    nonzero = label != 0
    breakdown = {}
    for relation in TEXT_RELATIONS:
        picked = relations == relation
        if not picked.any():
            continue
        fast_m, live_m = (mosi_metrics(p[picked], label[picked]) for p in (fast_pred, live_pred))
        part = (picked & nonzero).sum() / max(nonzero.sum(), 1)
        breakdown[relation] = {
            "windows": int(picked.sum()),
            "share": float(picked.mean()),
            "fast_acc": fast_m["Non0_acc_2"],
            "fast_mae": fast_m["MAE"],
            "live_acc": live_m["Non0_acc_2"],
            "live_mae": live_m["MAE"],
            "words_short": float(shortfall[picked].mean()),
            "gap_points": float(100 * part * (fast_m["Non0_acc_2"] - live_m["Non0_acc_2"])),
        }
    return breakdown


def breakdown_table(breakdown: dict[str, dict[str, float]]) -> list[str]:
    """Markdown lines of `text_breakdown`."""
    lines = [
        "| live text, against the --fast window's | windows | --fast Non0_acc_2 / MAE "
        "| real time Non0_acc_2 / MAE | words short | points of the gap |",
        "|---|---|---|---|---|---|",
    ]
    for relation, b in breakdown.items():
        lines.append(
            f"| {TEXT_RELATIONS[relation]} | {b['windows']} ({b['share']:.0%}) "
            f"| {100 * b['fast_acc']:.1f} / {b['fast_mae']:.3f} "
            f"| {100 * b['live_acc']:.1f} / {b['live_mae']:.3f} "
            f"| {b['words_short']:+.1f} | {b['gap_points']:.1f} |"
        )
    return lines


def _metrics(scored: Scored) -> dict[str, dict[str, float]]:
    pred, label, groups = scored
    return grouped_metrics(torch.from_numpy(pred), torch.from_numpy(label), groups)


def readme_block(
    rows: dict[str, dict[str, dict[str, float]]],
    checkpoint: Path,
    set_: Sequence[str],
    against: Sequence[str] | None,
    differences: dict[str, dict],
    breakdown: dict[str, dict[str, float]] | None = None,
) -> str:
    """README's continuous-MOSI table, a row per pace ("--fast", "real time") and level,
    with the command, given a baseline the paired intervals at each pace, and given both
    paces where the real-time windows lose to the --fast ones (`text_breakdown`)."""
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
    if breakdown:
        lines += [
            "",
            "Where real time loses, window by window: each live window's text against the "
            "--fast window's at the same time (same recogniser, same model):",
            "",
            *breakdown_table(breakdown),
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
        "and late text included, and report those windows too (and --against's, paired), "
        "with where they lose to the --fast ones (their text against the --fast text)",
    )
    parser.add_argument("--readme", action="store_true", help="write README.md's block")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    torch.set_num_threads(config.train.threads)
    paces = {"--fast": False} | ({"real time": True} if args.realtime else {})
    talks = {
        pace: score_windows(*talk_events(config.engine, realtime=live))
        for pace, live in paces.items()
    }
    tried = {pace: scored for pace, (scored, _) in talks.items()}
    rows = {pace: _metrics(scored) for pace, scored in tried.items()}
    print(json.dumps(rows, indent=2))
    breakdown = text_breakdown(talks["--fast"], talks["real time"]) if args.realtime else None
    if breakdown:
        print("\n".join(breakdown_table(breakdown)))
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
            readme_block(rows, checkpoint, args.set, args.against, differences, breakdown),
        )


if __name__ == "__main__":
    main()
