"""Streaming ASR against the DESIGN.md budget: compute per audio second, latency, WER.

    .venv/bin/python benchmarks/bench_asr.py [--clips continuous,espeak,mosi] [--chunk 0.5]
        [--runs 3] [--dither N] [--wav FILE --text REF] [--save DIR] [--set FIELD=VALUE]

Clips, made at run time: `continuous`, ~60 s of MOSI valid transcripts in four espeak-ng
voices with 0.7 s gaps (../shared/data/mosi/label.csv; --save DIR keeps it with its sidecar,
for `stream-mmsa bench DIR/continuous.wav --stages asr`); `espeak`, 8 positive/negative
sentences with 1-2 s pauses (~37 s); `mosi`, the real CMU-MOSI clip from ../shared/data/media
when present. Prints a markdown table.
Latencies are in simulated real time (see stream_mmsa/bench/asr.py); the machine is
shared, so compute figures are medians over --runs and the load average is printed with them.
--dither N adds N streaming passes on the audio plus -100 dBFS noise and prints their WER
spread: one pass's WER is one draw of a chaotic greedy decoder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

from stream_mmsa.bench.asr import benchmark_espeak, benchmark_streaming_asr
from stream_mmsa.bench.speech import MOSI_LABELS, espeak_available, make_continuous_speech
from stream_mmsa.features.asr import AsrConfig, load_asr_model
from stream_mmsa.train.readme import publish

MOSI_CLIP = Path(__file__).resolve().parents[2] / "shared/data/media/03bSnISJMiM_1.wav"
MOSI_TEXT = "anyhow it was really good"

COLUMNS = (
    ("clip", "file", "{}"),
    ("audio s", "audio_s", "{:.1f}"),
    ("stream compute/audio s", "stream_compute_per_audio_s", "{:.3f}"),
    ("offline greedy", "offline_compute_per_audio_s", "{:.3f}"),
    ("stream CPU/audio s", "stream_cpu_per_audio_s", "{:.3f}"),
    ("offline CPU/audio s", "offline_cpu_per_audio_s", "{:.3f}"),
    ("stream/offline CPU", "stream_over_offline_cpu", "{:.1f}x"),
    ("offline beam 5", "offline_default_compute_per_audio_s", "{:.3f}"),
    (
        "commit latency med / p95 s",
        ("commit_latency_median_s", "commit_latency_p95_s"),
        "{:.2f} / {:.2f}",
    ),
    (
        "interim latency med / p95 s",
        ("interim_latency_median_s", "interim_latency_p95_s"),
        "{:.2f} / {:.2f}",
    ),
    ("WER vs offline", "wer_stream_vs_offline", "{:.3f}"),
    (
        "WER vs reference (offline)",
        ("wer_stream_vs_reference", "wer_offline_vs_reference"),
        "{:.3f} ({:.3f})",
    ),
    ("load 1/5 min", "load", "{:.2f}"),
)


def cell(result: dict, key: str | tuple[str, ...], fmt: str) -> str:
    if key == "load":
        return " / ".join(f"{x:.2f}" for x in result["load"][:2])
    keys = key if isinstance(key, tuple) else (key,)
    values = [result.get(k) for k in keys]
    return "n/a" if any(v is None for v in values) else fmt.format(*values)


def table(results: list[dict], config: AsrConfig, args: argparse.Namespace) -> str:
    """The settings, then one markdown row per clip (and the dithered WER means)."""
    lines = [
        f"{config.model} {config.compute_type}, {config.cpu_threads} threads, "
        f"chunks of {args.chunk} s, step {config.step_s} s, medians of {args.runs} runs"
        + (f", set {' '.join(args.set)}" if args.set else "")
        + ".",
        "",
        "| " + " | ".join(name for name, _, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for result in results:
        lines.append("| " + " | ".join(cell(result, key, fmt) for _, key, fmt in COLUMNS) + " |")
    for result in results:
        for against in ("offline", "reference"):
            spread = result[f"wer_stream_vs_{against}_dither"]
            if spread:
                lines.append(
                    f"\n{result['file']}: WER vs {against} over {len(spread)} dithered passes, "
                    f"mean {sum(spread) / len(spread):.3f} (range {min(spread):.3f}-"
                    f"{max(spread):.3f})."
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="continuous,espeak,mosi", help="comma list")
    parser.add_argument("--chunk", type=float, default=0.5, help="seconds of audio per push")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dither", type=int, default=0, help="extra passes with -100 dBFS noise")
    parser.add_argument("--wav", type=Path, help="an extra file to measure")
    parser.add_argument("--text", help="reference transcript of --wav")
    parser.add_argument("--save", type=Path, help="keep the continuous clip in this directory")
    parser.add_argument("--readme", action="store_true", help="write README.md's block")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="an AsrConfig field other than the default (repeatable), e.g. step_s=1.25 or "
        "model=base",
    )
    args = parser.parse_args()
    clips = {c.strip() for c in args.clips.split(",") if c.strip()}

    overrides = dict(s.split("=", 1) for s in args.set)
    # Values read as load_config reads its overrides: 1.25 a number, base a name, null None.
    config = AsrConfig(**{k: yaml.safe_load(v) for k, v in overrides.items()})
    model = load_asr_model(config.model, config.model_path, cpu_threads=config.cpu_threads)
    measure = dict(runs=args.runs, model=model, config=config, dither=args.dither)
    results = []
    if "continuous" in clips and espeak_available() and MOSI_LABELS.is_file():
        with tempfile.TemporaryDirectory(prefix="asr_continuous_") as tmp:
            path, reference = make_continuous_speech(args.save or tmp)
            results.append(
                benchmark_streaming_asr(path, args.chunk, reference=reference, **measure)
            )
        results[-1]["file"] = "MOSI valid, continuous (espeak-ng, 4 voices, 0.7 s gaps)"
    elif "continuous" in clips:
        print(f"espeak-ng or {MOSI_LABELS} missing: continuous clip skipped")
    if "espeak" in clips and espeak_available():
        results.append(benchmark_espeak(args.chunk, **measure))
    elif "espeak" in clips:
        print("espeak-ng not installed: synthetic clip skipped")
    if "mosi" in clips and MOSI_CLIP.is_file():
        results.append(
            benchmark_streaming_asr(MOSI_CLIP, args.chunk, reference=MOSI_TEXT, **measure)
        )
        results[-1]["file"] = f"MOSI {MOSI_CLIP.name}"
    elif "mosi" in clips:
        print(f"{MOSI_CLIP} absent: real clip skipped")
    if args.wav:
        results.append(
            benchmark_streaming_asr(args.wav, args.chunk, reference=args.text, **measure)
        )

    command = "python benchmarks/bench_asr.py " + " ".join(sys.argv[1:])
    block = "-".join(["asr-continuous", *args.set])  # the default settings' block, or its own
    publish(block, f"`{command}`: {table(results, config, args)}", args.readme)
    for result in results:
        print(f"\n{result['file']}:\n  stream:  {result['stream_text']}")
        print(f"  offline: {result['offline_text']}")
        print(
            f"  steps {result['steps']}, words {result['words']}, guard cuts {result['rejected']}, "
            f"skipped {result['skipped_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
