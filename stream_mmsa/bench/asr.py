"""Measures streaming ASR against the budget in DESIGN.md: compute, latency, WER.

Why simulated real time: the machine is shared, so wall-clock replays would mostly measure
other people's jobs. Chunk k becomes available at its end time on the session clock; each
push starts when both the chunk is there and the previous push finished, and takes its
measured compute time. A word's latency is the simulated time it was committed (or first
shown, for interim) minus its end in the audio. This is the latency a real-time caller sees
when the ASR keeps up, without sleeping through the audio.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..features.asr import (
    AsrConfig,
    TranscriberCore,
    WhisperAsr,
    Word,
    load_asr_model,
    normalize_word,
)
from ..features.vad import SileroVad, SpeechTrack
from ..media.frames import AUDIO_RATE, AudioChunk
from .common import percentile
from .speech import load_audio, make_espeak_speech, wer

DITHER_RMS = 1e-5
"""Noise for the dithered passes: -100 dBFS, far below any microphone's own noise."""


def _stream_once(
    model: WhisperAsr, config: AsrConfig, audio: np.ndarray, chunk_seconds: float
) -> dict:
    """One simulated real-time pass; returns compute, latencies and the final words.

    compute_s is wall time inside push/flush (what latency sees); cpu_s is the process's CPU
    time over the pass, all threads, which a busy machine inflates less. The chunks come
    labelled by a VAD beforehand, as in the engine, whose one VAD per session serves ASR and
    acoustic features alike (`bench.acoustic.benchmark_acoustic` times it): it is not in these.
    """
    core = TranscriberCore(model, config, SileroVad() if config.vad else None)
    step = round(chunk_seconds * AUDIO_RATE)
    track = SpeechTrack(SileroVad())  # the session's VAD, outside the recogniser's compute
    chunks = [
        track.label(AudioChunk(audio[offset : offset + step], offset / AUDIO_RATE))
        for offset in range(0, len(audio), step)
    ]
    clock = compute = 0.0
    cpu_started = time.process_time()
    finals: list[tuple[Word, float]] = []
    first_seen: list[tuple[str, float, float]] = []  # (word, start, simulated time)

    def see(words: Sequence[Word], now: float) -> None:
        for w in words:
            key = normalize_word(w.word)
            if not any(k == key and abs(s - w.start) < 0.3 for k, s, _ in first_seen):
                first_seen.append((key, w.start, now))

    for chunk in chunks:
        clock = max(clock, chunk.end)
        started = time.perf_counter()
        update = core.push(chunk)
        spent = time.perf_counter() - started
        compute += spent
        clock += spent
        see(update.interim + update.final, clock)
        finals.extend((w, clock) for w in update.final)
    started = time.perf_counter()
    update = core.flush()
    spent = time.perf_counter() - started
    compute += spent
    clock += spent
    finals.extend((w, clock) for w in update.final)
    see(update.final, clock)

    cpu = time.process_time() - cpu_started
    commit = [at - w.end for w, at in finals]
    interim = []
    for w, at in finals:
        key = normalize_word(w.word)
        seen = [t for k, s, t in first_seen if k == key and abs(s - w.start) < 0.3]
        interim.append(min([*seen, at]) - w.end)
    return {
        "compute_s": compute,
        "cpu_s": cpu,
        "commit": commit,
        "interim": interim,
        "words": [w for w, _ in finals],
        "stats": core.stats,
    }


def benchmark_streaming_asr(
    wav_path: str | Path,
    chunk_seconds: float = 0.5,
    *,
    reference: str | None = None,
    runs: int = 3,
    model: WhisperAsr | None = None,
    config: AsrConfig | None = None,
    dither: int = 0,
) -> dict:
    """Streaming vs offline on one file: compute per audio second, latency, WER.

    Compute figures are medians over `runs` (the machine is shared); latencies pool all runs.
    `dither` extra streaming passes each add inaudible noise (`DITHER_RMS`) to the audio:
    greedy decoding of short windows is chaotic, so one pass's WER is one draw, and the
    spread of these (`wer_*_dither`) says which WER differences mean something.
    Offline is one greedy `WhisperModel.transcribe` pass over the whole file with the same model
    (the streaming decoder is greedy too); `offline_default_*` uses faster-whisper's defaults.
    `*_compute_*` is wall time, `*_cpu_*` process CPU time (all threads): the cost, which
    other people's jobs on a shared machine inflate less, so the ratio to offline uses it.
    """
    config = config or AsrConfig()
    model = model or load_asr_model(
        config.model,
        config.model_path,
        cpu_threads=config.cpu_threads,
        compute_type=config.compute_type,
    )
    audio = load_audio(wav_path)
    duration = len(audio) / AUDIO_RATE
    passes, offline_times, offline_cpu, default_times, offline_text = [], [], [], [], ""
    for _ in range(runs):  # interleaved, so a change in the machine's load hits both alike
        passes.append(_stream_once(model, config, audio, chunk_seconds))
        started, cpu_started = time.perf_counter(), time.process_time()
        segments, _ = model.whisper.transcribe(audio, beam_size=1, temperature=0.0)
        offline_text = " ".join(s.text.strip() for s in segments)  # the generator decodes here
        offline_times.append(time.perf_counter() - started)
        offline_cpu.append(time.process_time() - cpu_started)
        started = time.perf_counter()
        list(model.whisper.transcribe(audio)[0])  # faster-whisper defaults: beam 5, fallback
        default_times.append(time.perf_counter() - started)
    stream_text = " ".join(w.word for w in passes[0]["words"])
    dithered = []
    for seed in range(1, dither + 1):
        noise = np.random.default_rng(seed).normal(0.0, DITHER_RMS, len(audio))
        perturbed = _stream_once(model, config, audio + noise.astype(np.float32), chunk_seconds)
        dithered.append(" ".join(w.word for w in perturbed["words"]))
    stream_rtf = statistics.median(p["compute_s"] for p in passes) / duration
    offline_rtf = statistics.median(offline_times) / duration
    stream_cpu = statistics.median(p["cpu_s"] for p in passes) / duration
    offline_cpu_rtf = statistics.median(offline_cpu) / duration
    commit = [x for p in passes for x in p["commit"]]
    interim = [x for p in passes for x in p["interim"]]
    stats = passes[0]["stats"]
    return {
        "file": str(wav_path),
        "audio_s": duration,
        "chunk_s": chunk_seconds,
        "runs": runs,
        "load": os.getloadavg(),
        "stream_compute_per_audio_s": stream_rtf,
        "stream_cpu_per_audio_s": stream_cpu,
        "offline_compute_per_audio_s": offline_rtf,
        "offline_cpu_per_audio_s": offline_cpu_rtf,
        "stream_over_offline": stream_rtf / offline_rtf if offline_rtf else None,
        "stream_over_offline_cpu": stream_cpu / offline_cpu_rtf if offline_cpu_rtf else None,
        "offline_default_compute_per_audio_s": statistics.median(default_times) / duration,
        "commit_latency_median_s": percentile(commit, 50),
        "commit_latency_p95_s": percentile(commit, 95),
        "interim_latency_median_s": percentile(interim, 50),
        "interim_latency_p95_s": percentile(interim, 95),
        "wer_stream_vs_offline": wer(offline_text, stream_text),
        "wer_stream_vs_reference": wer(reference, stream_text) if reference else None,
        "wer_offline_vs_reference": wer(reference, offline_text) if reference else None,
        "wer_stream_vs_offline_dither": [wer(offline_text, t) for t in dithered],
        "wer_stream_vs_reference_dither": [wer(reference, t) for t in dithered]
        if reference
        else [],
        "stream_text": stream_text,
        "offline_text": offline_text,
        "steps": stats.steps,
        "words": stats.committed_words,
        "rejected": stats.rejected,
        "skipped_s": stats.skipped_s,
    }


def benchmark_espeak(chunk_seconds: float = 0.5, runs: int = 3, **kwargs) -> dict:
    """`benchmark_streaming_asr` on the synthetic espeak-ng clip, made in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="asr_bench_") as tmp:
        path, reference = make_espeak_speech(tmp)
        result = benchmark_streaming_asr(
            path, chunk_seconds, reference=reference, runs=runs, **kwargs
        )
    result["file"] = "espeak-ng (synthetic, 8 sentences)"
    return result


def bench_asr(path: Path) -> dict:
    """The CLI's ASR stage: two runs on `path`, its sidecar's sentences as the reference."""
    sidecar = path.with_suffix(".json")
    reference = None
    if sidecar.exists():
        reference = " ".join(s["text"] for s in json.loads(sidecar.read_text())["sentences"])
    result = benchmark_streaming_asr(path, 0.5, reference=reference, runs=2)
    return {k: v for k, v in result.items() if not isinstance(v, str) or k.endswith("text")}
