"""The face stage's two runtimes on the same frames: LiteRT with our glue against MediaPipe's
graph (features/face_mesh.py), on the bundled sample and the real CMU-MOSI clip of
../shared/data/media when present; then the engine's events on the sample (--fast) under
each runtime. Prints a markdown table; --readme writes the README's face-runtimes block.

    .venv/bin/python benchmarks/face_runtimes.py [--readme]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import numpy as np

from stream_mmsa.bench.face import compare_runtimes
from stream_mmsa.config import EngineConfig
from stream_mmsa.live import file_events
from stream_mmsa.train.readme import publish

ROOT = Path(__file__).resolve().parents[1]
CLIPS = (ROOT / "examples/media/sample.mp4", ROOT.parent / "shared/data/media/Oz06ZWiO20M_6.mp4")


def table(reports: list[dict]) -> str:
    lines = [
        "| clip | frames | face in both (either) | blendshapes: mean, p95 abs. diff "
        "| head pose: mean abs. diff yaw / pitch / roll | same top expression "
        "| ms/frame LiteRT | ms/frame MediaPipe | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        pose, ms = r["pose_diff_deg"], r["ms_per_frame"]
        lines.append(
            f"| {r['clip']} | {r['frames']} | {r['faces_both']} ({r['faces_either']}) "
            f"| {r['blendshape_diff_mean']:.4f}, {r['blendshape_diff_p95']:.4f} "
            f"| {pose['yaw']:.2f}° / {pose['pitch']:.2f}° / {pose['roll']:.2f}° "
            f"| {r['same_top_expression']:.1%} | {ms['litert']:.1f} | {ms['mediapipe']:.1f} "
            f"| {ms['mediapipe'] / ms['litert']:.2f}× |"
        )
    return "\n".join(lines)


def sample_events_line() -> str:
    """How far the engine's sentiment events on the sample move between the runtimes."""
    sentiment = {}
    for runtime in ("litert", "mediapipe"):
        config = EngineConfig(face_runtime=runtime)
        events = asyncio.run(file_events(config, CLIPS[0], realtime=False))
        sentiment[runtime] = [e for e in events if e["type"] == "sentiment"]
    pairs = list(zip(sentiment["litert"], sentiment["mediapipe"], strict=True))
    scores = np.array([[a["sentiment"]["score"], b["sentiment"]["score"]] for a, b in pairs])
    gap = np.abs(scores[:, 0] - scores[:, 1])

    def expression(event: dict) -> str | None:
        return (event["modalities"]["vision"].get("expression") or {}).get("label")

    same = np.mean([expression(a) == expression(b) for a, b in pairs])
    return (
        f"The engine on the sample (`--fast`), {len(pairs)} sentiment events under each runtime: "
        f"scores differ by {gap.mean():.4f} on average, {gap.max():.4f} at most; the window's "
        f"expression label is the same in {same:.0%} of them."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", action="store_true", help="write README's block")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    reports = [compare_runtimes(clip) for clip in CLIPS if clip.exists()]
    command = "python benchmarks/face_runtimes.py --readme"
    body = (
        f"`{command}` (load {load:.1f}; ms/frame = landmarker + expression classifier, "
        "median):\n\n" + table(reports) + "\n\n" + sample_events_line()
    )
    publish("face-runtimes", body, args.readme)


if __name__ == "__main__":
    main()
