"""`stream-mmsa bench`: every budget of DESIGN.md measured on the bundled sample.

Each stage is timed on its own (model, face, acoustic, ASR; one module each in this
package) and then the whole engine runs the sample at real-time pace, which is where event
latency and event-loop lag mean something. Figures are medians; the machine load is
recorded with them because these machines are shared.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ..config import EngineConfig
from .sessions import SessionsPlan
from .sessions import markdown as sessions_table


def run_bench(
    path: Path, config: EngineConfig, stages: list[str], plan: SessionsPlan | None = None
) -> dict:
    """Run the chosen stages; returns every figure with the machine's load."""
    from .acoustic import benchmark_acoustic
    from .asr import bench_asr
    from .common import host_speed_ms
    from .engine import bench_engine
    from .face import benchmark_face
    from .model import bench_model
    from .sessions import bench_sessions

    results: dict[str, object] = {"sample": str(path), "load_before": os.getloadavg()}
    host_before = host_speed_ms()
    if "model" in stages:
        results["model"] = bench_model(config.model_threads)
    if "face" in stages:
        results["face"] = benchmark_face(path, runtime=config.face_runtime)
        other = "mediapipe" if config.face_runtime == "litert" else "litert"
        results["face_other_runtime"] = benchmark_face(path, runtime=other)
    if "acoustic" in stages:
        results["acoustic"] = benchmark_acoustic(path)
    if "asr" in stages:
        results["asr"] = bench_asr(path)
    if "engine" in stages:
        results["engine"] = asyncio.run(bench_engine(path, config))
    if "sessions" in stages:
        results["sessions"] = bench_sessions(plan or SessionsPlan([1, 4, 8], ["file"]), config)
    results["load_after"] = os.getloadavg()
    results["host_ms"] = (host_before, host_speed_ms())
    return results


def _row(stage: str, value: str, budget: str) -> str:
    return f"| {stage} | {value} | {budget} |"


def markdown(results: dict) -> str:
    """The figures against DESIGN.md's budget table."""
    lines = ["| stage | measured (median) | budget |", "|---|---|---|"]
    if "engine" in results:
        e = results["engine"]
        lines.append(
            _row(
                "event after window end",
                f"p50 {e['latency_p50_ms']:.0f} ms, p95 {e['latency_p95_ms']:.0f} ms",
                "p95 ≤ 150 ms",
            )
        )
        lines.append(_row("event-loop lag", f"p99 {e['loop_lag_p99_ms']:.1f} ms", "p99 ≤ 20 ms"))
    if "model" in results:
        rows = {(r["mode"], r["batch_size"]): r for r in results["model"]["rows"]}
        one, many = rows[("gate", 1)], rows[("gate", 32)]
        lines.append(
            _row(
                "fusion + evaluator (T=50, MOSEI dims)",
                f"{one['ms_per_window']:.2f} ms at batch 1; {many['windows_per_s']:.0f} windows/s "
                "at batch 32",
                "≤ 7 ms; ≥ 900 windows/s",
            )
        )
    if "face" in results:
        f, other = results["face"], results.get("face_other_runtime")
        versus = ""
        if other is not None:
            versus = (
                f"; {other['runtime']}: {other['ms_per_frame_median']:.1f} ms, "
                f"{other['ms_per_frame_median'] / f['ms_per_frame_median']:.2f}×"
            )
        lines.append(
            _row(
                f"face landmarker + expression ({f['runtime']})",
                f"{f['ms_per_frame_median']:.1f} ms/frame (p95 {f['ms_per_frame_p95']:.1f}; "
                f"expression {f['expression_ms_per_face_median']:.2f} ms/face{versus})",
                "≤ 10 ms",
            )
        )
    if "acoustic" in results:
        a = results["acoustic"]
        lines.append(_row("acoustic features", f"{a['ms_per_audio_s']:.1f} ms/audio s", ""))
        lines.append(
            _row(
                "VAD, once per session (ASR + acoustic)",
                f"{a['vad_ms_per_audio_s']:.1f} ms/audio s",
                "",
            )
        )
    if "asr" in results:
        a = results["asr"]
        lines.append(
            _row(
                "ASR CPU per audio second",
                f"{a['stream_cpu_per_audio_s']:.3f} s, {a['stream_over_offline_cpu']:.1f}× "
                f"one offline pass ({a['offline_cpu_per_audio_s']:.3f} s); wall "
                f"{a['stream_compute_per_audio_s']:.3f} s",
                "≤ 2× offline",
            )
        )
        lines.append(
            _row(
                "committed-word latency",
                f"{a['commit_latency_median_s']:.2f} s (p95 {a['commit_latency_p95_s']:.2f} s)",
                "median ≤ 1.5 s",
            )
        )
        if a.get("wer_stream_vs_reference") is not None:
            lines.append(
                _row(
                    "WER on the clip's sentences",
                    f"streaming {a['wer_stream_vs_reference']:.3f}, offline "
                    f"{a['wer_offline_vs_reference']:.3f}, streaming vs offline "
                    f"{a['wer_stream_vs_offline']:.3f}",
                    "",
                )
            )
    if len(lines) == 2:  # no per-stage figures: only the sessions table
        lines = []
    if "sessions" in results:
        lines += ["", f"Sessions per box on {results['sessions']['clip']}:", ""]
        lines.append(sessions_table(results["sessions"]))
    load = results.get("load_before", (0, 0, 0))
    lines.append(f"\nLoad average before the run: {load[0]:.2f} (1 min) on {os.cpu_count()} CPUs.")
    if "host_ms" in results:
        lines[-1] += " " + host_line(results["host_ms"])
    return "\n".join(lines)


def host_line(host_ms: tuple[float, float]) -> str:
    """The reference workload before and after a run: what makes two runs comparable."""
    before, after = host_ms
    return (
        f"Reference workload (one thread, bench/common.py host_speed_ms) {before:.1f} ms "
        f"before, {after:.1f} ms after: a slower host scales every figure; compare runs "
        "by it, not by the load average alone."
    )
