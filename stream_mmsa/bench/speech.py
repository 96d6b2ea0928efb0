"""Speech clips for the ASR benchmark and tests: espeak-ng sentences with pauses, and WER."""

from __future__ import annotations

import re
import shutil
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..features.asr import normalize_word
from ..media.frames import AUDIO_RATE

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
