"""Speech clips for the ASR benchmark and tests: espeak-ng sentences with pauses, and WER.

Two kinds: the short positive/negative clip with 1-2 s pauses (`make_espeak_speech`, the
tests' clip), and continuous speech from MOSI valid transcripts in several voices with 0.7 s
gaps (`make_continuous_speech`): the pauses of the first let the recogniser rest between
sentences, the second is what a talking speaker gives it, and what issue 10 measures on.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..features.asr import normalize_word
from ..media.frames import AUDIO_RATE
from ..media.speech import speak

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


MOSI_LABELS = Path(__file__).resolve().parents[3] / "shared/data/mosi/label.csv"
"""CMU-MOSI transcripts in MMSA's label.csv layout, next to a checkout (../shared)."""

VOICES: tuple[tuple[str, ...], ...] = (
    ("-s", "165", "-p", "50"),
    ("-v", "en-us+f3", "-s", "180", "-p", "65"),
    ("-v", "en-gb", "-s", "150", "-p", "40"),
    ("-v", "en-us+m3", "-s", "190", "-p", "55"),
)
"""espeak-ng flags after `-v en-us` (a later -v wins), cycled per sentence: two speeds of
American, a female variant, British: different voices, so no one voice's quirks decide."""


def mosi_rows(labels: str | Path = MOSI_LABELS, split: str = "valid") -> list[dict]:
    """The utterances of one split of a label.csv in file order: id, transcript, label."""
    with open(labels, newline="") as handle:
        return [
            {
                "id": f"{row['video_id']}_{row['clip_id']}",
                "text": row["text"].strip(),
                "label": float(row["label"]),
            }
            for row in csv.DictReader(handle)
            if row["mode"] == split
        ]


def make_continuous_speech(
    directory: str | Path,
    duration_s: float = 60.0,
    gap_s: float = 0.7,
    labels: str | Path = MOSI_LABELS,
) -> tuple[Path, str]:
    """About `duration_s` of MOSI valid sentences, voices cycling, `gap_s` between them.

    Writes continuous.wav and continuous.json beside it (the sentences with id, label, voice
    and times, as the bundled sample's sidecar, so `stream-mmsa bench` finds the reference).
    Returns the wav and its reference text.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gap = np.zeros(round(gap_s * AUDIO_RATE), np.float32)
    pieces, spoken, at = [gap], [], gap_s
    for i, row in enumerate(mosi_rows(labels)):
        if at >= duration_s:
            break
        voice = VOICES[i % len(VOICES)]
        speech = speak(row["text"], voice)
        if not len(speech):
            continue
        end = at + len(speech) / AUDIO_RATE
        spoken.append({**row, "voice": " ".join(voice), "start": at, "end": end})
        pieces += [speech, gap]
        at = end + gap_s
    path = directory / "continuous.wav"
    write_wav(path, np.concatenate(pieces))
    sidecar = {"source": f"{labels} (valid)", "gap_s": gap_s, "sentences": spoken}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    return path, " ".join(s["text"] for s in spoken)
