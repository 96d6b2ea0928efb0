"""Synthetic speech with espeak-ng: the bundled sample's voice and the spoken training data."""

from __future__ import annotations

import subprocess
import tempfile
import wave
from pathlib import Path

import av
import numpy as np

from .frames import AUDIO_RATE


def speak(text: str, voice: tuple[str, ...] = ()) -> np.ndarray:
    """espeak-ng (en-us, extra `voice` flags) at 16 kHz float32, trimmed to the voiced part.

    Deterministic for a given text and voice; peak-normalised to 0.5. Empty when
    espeak-ng produced nothing audible (e.g. a transcript of punctuation only).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", *voice, "-w", str(path), "--", text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if not len(pcm):
        return np.zeros(0, dtype=np.float32)
    frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    resampled = [*resampler.resample(frame), *resampler.resample(None)]
    speech = np.concatenate([f.to_ndarray()[0] for f in resampled])
    loud = np.flatnonzero(np.abs(speech) > 0.02)
    if not len(loud):
        return np.zeros(0, dtype=np.float32)
    speech = speech[loud[0] : loud[-1] + 1]
    return 0.5 * speech / np.abs(speech).max()
