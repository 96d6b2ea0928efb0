"""Measures streaming ASR against the budget in DESIGN.md: compute, latency, WER.

Why simulated real time: the machine is shared, so wall-clock replays would mostly measure
other people's jobs. Chunk k becomes available at its end time on the session clock; each
push starts when both the chunk is there and the previous push finished, and takes its
measured compute time. A word's latency is the simulated time it was committed (or first
shown, for interim) minus its end in the audio. This is the latency a real-time caller sees
when the ASR keeps up, without sleeping through the audio.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..media.frames import AUDIO_RATE, AudioChunk
from .asr import (
    AsrConfig,
    TranscriberCore,
    WhisperAsr,
    Word,
    load_asr_model,
    normalize_word,
)
from .vad import SileroVad, SpeechTrack

SENTENCES = (
    "I really loved this movie, it was wonderful.",
    "The acting was terrible and the story made no sense at all.",
    "Honestly, the music was beautiful and I enjoyed every minute of it.",
    "I hated the ending, it was boring and far too long.",
    "My friends thought it was a great film.",
    "The dialogue felt awkward and the jokes were not funny.",
    "Overall, I would happily watch it again with my family.",
    "But the second half was a complete waste of time.",
)
"""Positive and negative sentences for the synthetic clip (about 35 s with the pauses)."""


def normalize_text(text: str) -> list[str]:
    """Words for WER: lower case, punctuation dropped (apostrophes kept)."""
    return [w for w in (normalize_word(t) for t in re.split(r"[\s\-]+", text)) if w]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / len(ref)


def load_audio(path: str | Path) -> np.ndarray:
    """Any file PyAV reads, as mono float32 at 16 kHz."""
    from faster_whisper import decode_audio

    return decode_audio(str(path), sampling_rate=AUDIO_RATE)


def write_wav(path: str | Path, audio: np.ndarray) -> None:
    """Mono 16-bit PCM at 16 kHz."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(AUDIO_RATE)
        out.writeframes(pcm.tobytes())


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def make_espeak_speech(
    directory: str | Path,
    sentences: Sequence[str] = SENTENCES,
    pauses: Sequence[float] = (1.0, 2.0),
    lead_s: float = 0.5,
) -> tuple[Path, str]:
    """Speak `sentences` with espeak-ng, separated by pauses cycling through `pauses`.

    Returns the 16 kHz mono wav and its reference text. Needs Debian's espeak-ng.
    """
    if not espeak_available():
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pieces = [np.zeros(round(lead_s * AUDIO_RATE), np.float32)]
    for i, sentence in enumerate(sentences):
        raw = directory / f"sentence{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), sentence], check=True, capture_output=True)
        pieces.append(load_audio(raw))
        pieces.append(np.zeros(round(pauses[i % len(pauses)] * AUDIO_RATE), np.float32))
    path = directory / "speech.wav"
    write_wav(path, np.concatenate(pieces))
    return path, " ".join(sentences)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _stream_once(
    model: WhisperAsr, config: AsrConfig, audio: np.ndarray, chunk_seconds: float
) -> dict:
    """One simulated real-time pass; returns compute, latencies and the final words.

    compute_s is wall time inside push/flush (what latency sees); cpu_s is the process's CPU
    time over the pass, all threads, which a busy machine inflates less. The chunks come
    labelled by a VAD beforehand, as in the engine, whose one VAD per session serves ASR and
    acoustic features alike (`bench_media.benchmark_acoustic` times it): it is not in these.
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
) -> dict:
    """Streaming vs offline on one file: compute per audio second, latency, WER.

    Compute figures are medians over `runs` (the machine is shared); latencies pool all runs.
    Offline is one greedy `WhisperModel.transcribe` pass over the whole file with the same model
    (the streaming decoder is greedy too); `offline_default_*` uses faster-whisper's defaults.
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
    passes = [_stream_once(model, config, audio, chunk_seconds) for _ in range(runs)]
    offline_times, default_times, offline_text = [], [], ""
    for _ in range(runs):
        started = time.perf_counter()
        segments, _ = model.whisper.transcribe(audio, beam_size=1, temperature=0.0)
        offline_text = " ".join(s.text.strip() for s in segments)  # the generator decodes here
        offline_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        list(model.whisper.transcribe(audio)[0])  # faster-whisper defaults: beam 5, fallback
        default_times.append(time.perf_counter() - started)
    stream_text = " ".join(w.word for w in passes[0]["words"])
    stream_rtf = statistics.median(p["compute_s"] for p in passes) / duration
    offline_rtf = statistics.median(offline_times) / duration
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
        "stream_cpu_per_audio_s": statistics.median(p["cpu_s"] for p in passes) / duration,
        "offline_compute_per_audio_s": offline_rtf,
        "stream_over_offline": stream_rtf / offline_rtf if offline_rtf else None,
        "offline_default_compute_per_audio_s": statistics.median(default_times) / duration,
        "commit_latency_median_s": _percentile(commit, 50),
        "commit_latency_p95_s": _percentile(commit, 95),
        "interim_latency_median_s": _percentile(interim, 50),
        "interim_latency_p95_s": _percentile(interim, 95),
        "wer_stream_vs_offline": wer(offline_text, stream_text),
        "wer_stream_vs_reference": wer(reference, stream_text) if reference else None,
        "wer_offline_vs_reference": wer(reference, offline_text) if reference else None,
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
