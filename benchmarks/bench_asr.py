"""Streaming ASR against the DESIGN.md budget: compute per audio second, latency, WER.

    .venv/bin/python benchmarks/bench_asr.py [--chunk 0.5] [--runs 3] [--wav FILE --text REF]

Clips: espeak-ng speech made at run time (8 positive/negative sentences, 1-2 s pauses, ~37 s)
and the real CMU-MOSI clip from ../shared/data/media when present. Prints a markdown table.
Latencies are in simulated real time (see stream_mmsa/bench/asr.py); the machine is
shared, so compute figures are medians over --runs and the load average is printed with them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stream_mmsa.bench.asr import benchmark_espeak, benchmark_streaming_asr
from stream_mmsa.bench.speech import espeak_available
from stream_mmsa.features.asr import AsrConfig, load_asr_model

MOSI_CLIP = Path(__file__).resolve().parents[2] / "shared/data/media/03bSnISJMiM_1.wav"
MOSI_TEXT = "anyhow it was really good"

COLUMNS = (
    ("clip", "file", "{}"),
    ("audio s", "audio_s", "{:.1f}"),
    ("stream compute/audio s", "stream_compute_per_audio_s", "{:.3f}"),
    ("stream CPU/audio s", "stream_cpu_per_audio_s", "{:.3f}"),
    ("offline greedy", "offline_compute_per_audio_s", "{:.3f}"),
    ("stream/offline", "stream_over_offline", "{:.1f}x"),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=float, default=0.5, help="seconds of audio per push")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wav", type=Path, help="an extra file to measure")
    parser.add_argument("--text", help="reference transcript of --wav")
    args = parser.parse_args()

    config = AsrConfig()
    model = load_asr_model(config.model, config.model_path, cpu_threads=config.cpu_threads)
    results = []
    if espeak_available():
        results.append(benchmark_espeak(args.chunk, args.runs, model=model, config=config))
    else:
        print("espeak-ng not installed: synthetic clip skipped")
    if MOSI_CLIP.is_file():
        results.append(
            benchmark_streaming_asr(
                MOSI_CLIP,
                args.chunk,
                reference=MOSI_TEXT,
                runs=args.runs,
                model=model,
                config=config,
            )
        )
        results[-1]["file"] = f"MOSI {MOSI_CLIP.name}"
    else:
        print(f"{MOSI_CLIP} absent: real clip skipped")
    if args.wav:
        results.append(
            benchmark_streaming_asr(
                args.wav,
                args.chunk,
                reference=args.text,
                runs=args.runs,
                model=model,
                config=config,
            )
        )

    print(
        f"\ntiny.en {config.compute_type}, {config.cpu_threads} threads, chunks of {args.chunk} s, "
        f"step {config.step_s} s, medians of {args.runs} runs\n"
    )
    print("| " + " | ".join(name for name, _, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for result in results:
        print("| " + " | ".join(cell(result, key, fmt) for _, key, fmt in COLUMNS) + " |")
    for result in results:
        print(f"\n{result['file']}:\n  stream:  {result['stream_text']}")
        print(f"  offline: {result['offline_text']}")
        print(
            f"  steps {result['steps']}, words {result['words']}, guard cuts {result['rejected']}, "
            f"skipped {result['skipped_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
