"""Check the engine's GPU path end to end, on a machine with CUDA (`engine.device=cuda`).

    .venv/bin/python scripts/check_gpu.py [--media FILE] [--json results.json] [--device cpu]

What it checks, each line PASS or FAIL with its figures:

1. placement: the fusion model, the text encoder (both parts), the inference worker and
   faster-whisper (float16) are on CUDA, as `Runtime(EngineConfig(device="cuda"))` put them
   (a model that cannot load there is one FAIL line with the error, and nothing else runs);
2. events: the sample through a Session as fast as possible (as `run --fast`) on CUDA: one
   sentiment event per hop, seq gapless, the session `ended` at the end of the source, the
   final transcript close to the sample's sentences (WER ≤ 0.35), positive sentences
   scored above the negative ones;
3. numerics: the fusion model on CUDA against a CPU copy on the same 64 windows (every
   missing modality imagined, so that no gate decision near its threshold tips over);
4. throughput: fusion + evaluator on CUDA at batch 1, 32 and 256 (T = 50, windows/s), and
   streaming ASR compute per audio second on CUDA against one offline pass.

Without CUDA (torch or CTranslate2 sees no device) it prints one line saying so and exits
2 having checked nothing; otherwise it exits 0 when every check passed, else 1.
`--device cpu` runs the same checks on the CPU, to try the script where there is no GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from stream_mmsa.config import EngineConfig
from stream_mmsa.device import cuda_devices
from stream_mmsa.paths import SAMPLE

BATCHES = (1, 32, 256)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


def on(module: torch.nn.Module, device: str) -> bool:
    return all(p.device.type == device for p in module.parameters())


def placement_checks(runtime, device: str) -> list[Check]:
    whisper = runtime.asr_model.whisper.model
    encoder = runtime.text_encoder
    compute = runtime.placement.asr_compute_type  # CTranslate2 reports int8 as int8_float32
    return [
        Check(f"fusion model on {device}", on(runtime.model, device), runtime.placement.describe()),
        Check(
            f"text encoder on {device}",
            on(encoder.bottom, device)
            and on(encoder.top, device)
            and encoder.device.type == device,
            f"inputs to {encoder.device}",
        ),
        Check(f"inference worker on {device}", runtime.worker.device.type == device),
        Check(
            f"faster-whisper on {device}, {compute}",
            whisper.device == device and whisper.compute_type.startswith(compute),
            f"CTranslate2 {whisper.device} {whisper.compute_type}",
        ),
    ]


async def sample_events(runtime, media: Path) -> tuple[list, object, float]:
    from stream_mmsa.engine import Session
    from stream_mmsa.media.sources.file import FileSource
    from stream_mmsa.sinks.group import SinkGroup

    events: list = []
    started = time.perf_counter()
    async with SinkGroup([]) as sink:
        source = FileSource(media, realtime=False)
        session = Session(runtime, source, sink, realtime=False, on_event=events.append)
        summary = await session.run()
    return events, summary, time.perf_counter() - started


def event_checks(events: list, summary, seconds: float, media: Path) -> list[Check]:
    from stream_mmsa.bench.speech import wer
    from stream_mmsa.windowing import window_count

    sentiments = [e for e in events if e.type == "sentiment"]
    expected = window_count(summary.duration, EngineConfig().window.hop)
    checks = [
        Check(
            "one sentiment event per hop",
            len(sentiments) == expected > 0,
            f"{len(sentiments)} for {summary.duration:.1f} s of media (expected {expected}); "
            f"{len(events)} events in {seconds:.1f} s",
        ),
        Check("seq gapless", [e.seq for e in events] == list(range(len(events)))),
        Check(
            "session ended at the end of the source",
            events[-1].type == "session" and events[-1].state == "ended" and summary.ok,
            summary.ended,
        ),
    ]
    sidecar = media.with_suffix(".json")
    if not sidecar.exists():
        return checks
    timeline = json.loads(sidecar.read_text())
    text = " ".join(e.text for e in events if e.type == "transcript" and e.final)
    error = wer(" ".join(s["text"] for s in timeline["sentences"]), text)
    checks.append(Check("transcript: WER vs the sentences ≤ 0.35", error <= 0.35, f"{error:.3f}"))
    means = {}
    for polarity in ("positive", "negative"):
        spans = [(s["start"], s["end"]) for s in timeline["sentences"] if s["polarity"] == polarity]
        scores = [
            e.sentiment.score
            for e in sentiments
            if any(a <= e.window.end <= b + 1.0 for a, b in spans)
        ]
        means[polarity] = statistics.fmean(scores) if scores else float("nan")
    checks.append(
        Check(
            "positive sentences score above negative ones",
            means["positive"] > means["negative"],
            f"mean {means['positive']:+.2f} vs {means['negative']:+.2f}",
        )
    )
    return checks


def numerics_check(runtime, device: str) -> Check:
    from stream_mmsa.bench.model import synthetic_batch

    fusion = runtime.model.fusion
    batch = synthetic_batch(fusion.config.input_dims, 64, 50, ragged=True)
    on_cpu = copy.deepcopy(fusion).cpu().eval()
    with torch.inference_mode():
        placed = fusion(batch.to(device), imagine="always").score.cpu()
        reference = on_cpu(batch, imagine="always").score  # no gate threshold to tip over
    diff = float((placed - reference).abs().max())
    return Check(
        f"fusion scores on {device} match a CPU copy (|Δ| ≤ 1e-3)",
        diff <= 1e-3,
        f"max |Δscore| {diff:.2e} over 64 windows",
    )


def throughput_checks(runtime, media: Path, device: str) -> tuple[list[Check], dict]:
    from stream_mmsa.bench.asr import benchmark_streaming_asr
    from stream_mmsa.bench.model import benchmark_fusion
    from stream_mmsa.features.asr import AsrConfig

    rows = benchmark_fusion(runtime.model.fusion, BATCHES, seq_len=50, repeats=50, modes=("gate",))
    rate = {r["batch_size"]: r["windows_per_s"] for r in rows}
    asr = benchmark_streaming_asr(media, 0.5, runs=2, model=runtime.asr_model, config=AsrConfig())
    checks = [
        Check(
            f"fusion batches on {device}: more windows/s at batch {BATCHES[-1]} than at 1",
            rate[BATCHES[-1]] > rate[1],
            ", ".join(
                f"batch {r['batch_size']}: {r['ms_per_batch']:.2f} ms, "
                f"{r['windows_per_s']:,.0f} windows/s"
                for r in rows
            ),
        ),
        Check(
            f"streaming ASR on {device} faster than real time",
            asr["stream_compute_per_audio_s"] < 1.0,
            f"{asr['stream_compute_per_audio_s']:.3f} s per audio s "
            f"(offline pass {asr['offline_compute_per_audio_s']:.3f} s); "
            f"WER stream vs offline {asr['wer_stream_vs_offline']:.3f}",
        ),
    ]
    return checks, {"fusion": rows, "asr": asr}


async def run_checks(media: Path, device: str) -> tuple[list[Check], dict]:
    from stream_mmsa.engine import Runtime

    try:
        runtime = Runtime(EngineConfig(device=device))
    except (RuntimeError, ValueError) as error:  # e.g. CTranslate2 without the cuBLAS it needs
        return [Check(f"models load on {device}", False, f"{type(error).__name__}: {error}")], {}
    async with runtime:
        checks = placement_checks(runtime, device)
        events, summary, seconds = await sample_events(runtime, media)
        checks += event_checks(events, summary, seconds, media)
        checks.append(numerics_check(runtime, device))
        more, figures = await asyncio.to_thread(throughput_checks, runtime, media, device)
    return checks + more, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=SAMPLE, help="default: the sample")
    parser.add_argument("--json", type=Path, help="write every check and figure here")
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="cpu: try the script itself"
    )
    args = parser.parse_args(argv)
    in_torch, in_ctranslate2 = cuda_devices()
    if args.device == "cuda" and not (in_torch and in_ctranslate2):
        print(
            f"check_gpu: no CUDA device for the engine (torch sees {in_torch}, CTranslate2 sees "
            f"{in_ctranslate2}); nothing was checked",
            file=sys.stderr,
        )
        return 2
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"check_gpu: {name}, torch {torch.__version__}, media {args.media}", flush=True)
    checks, figures = asyncio.run(run_checks(args.media, args.device))
    for check in checks:
        detail = f": {check.detail}" if check.detail else ""
        print(f"{'PASS' if check.ok else 'FAIL'}  {check.name}{detail}")
    failed = sum(not c.ok for c in checks)
    print(f"check_gpu: {len(checks) - failed} of {len(checks)} checks passed on {name}")
    if args.json:
        payload = {"device": name, "checks": [asdict(c) for c in checks], **figures}
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
