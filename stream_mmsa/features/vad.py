"""Voice activity detection, run once per session and shared by ASR and acoustic features.

Both the recogniser (to gate decoding and end utterances) and the acoustic extractor (to
report "no speech") need Silero's speech probabilities for the same samples. `SpeechTrack`
runs a detector once over a stream of chunks and gives each chunk the probabilities of the
frames it completes (`AudioChunk.speech`); the engine runs one per session before the
extractors, which then read the chunk's frames instead of running a VAD of their own. An
extractor used on its own (tests, benchmarks) keeps a private track for chunks without them.
"""

from __future__ import annotations

from typing import Protocol, TypeGuard

import numpy as np

from ..media.frames import AUDIO_RATE, AudioChunk, Frame, SpeechFrames

MAX_GAP_FILL_S = 1.0
"""Input gaps up to this long are fed to the detector as silence; longer ones restart it."""
TIME_TOLERANCE = 1e-3
"""Chunk times closer than this to the expected time are treated as contiguous."""


class VoiceDetector(Protocol):
    """Streaming speech probability per frame of `frame_samples`; keeps state across calls."""

    frame_samples: int

    def __call__(self, samples: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


class SileroVad:
    """Silero VAD v6 from faster-whisper's assets, run frame by frame with its recurrent state.

    faster-whisper's own `get_speech_timestamps` needs the whole file; carrying `h`, `c` and the
    64-sample context between calls gives the same probabilities incrementally. The ONNX
    session is shared by all sessions (thread-safe); the state is per instance.
    """

    frame_samples = 512
    _context_samples = 64

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(self._context_samples, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for every complete frame; a partial frame waits for the next call."""
        audio = np.concatenate([self._rest, samples.astype(np.float32, copy=False)])
        n = len(audio) // self.frame_samples
        self._rest = audio[n * self.frame_samples :]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = audio[: n * self.frame_samples].reshape(n, self.frame_samples)
        previous = np.concatenate([self._context[None], frames[:-1, -self._context_samples :]])
        batch = np.concatenate([previous, frames], axis=1)
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = frames[-1, -self._context_samples :].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)


def check_chunk(chunk: AudioChunk) -> np.ndarray:
    """The chunk's samples as float32, or a ValueError saying what the source must fix."""
    if chunk.sample_rate != AUDIO_RATE:
        raise ValueError(
            f"speech analysis needs {AUDIO_RATE} Hz audio, got a chunk at {chunk.sample_rate} "
            "Hz: resample in the source (e.g. av.AudioResampler(rate=16000))"
        )
    samples = np.asarray(chunk.samples)
    if samples.ndim != 1:
        raise ValueError(f"speech analysis needs mono samples (1-D), got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"speech analysis needs float samples in [-1, 1], got {samples.dtype}")
    return samples.astype(np.float32, copy=False)


def joined(
    expected: float, start: float, samples: np.ndarray, max_gap_s: float
) -> np.ndarray | None:
    """`samples` starting at `start`, made to continue a stream that ends at `expected`: a
    gap up to `max_gap_s` is filled with silence, an overlap is dropped (that time is already
    in); None when the gap is longer and the stream must restart at `start`."""
    gap = start - expected
    if gap > max_gap_s:
        return None
    if gap > TIME_TOLERANCE:
        return np.concatenate([np.zeros(round(gap * AUDIO_RATE), np.float32), samples])
    if gap < -TIME_TOLERANCE:
        return samples[round(-gap * AUDIO_RATE) :]
    return samples


class SpeechTrack:
    """A detector run over one stream of chunks, on a sample grid that follows the chunk times.

    A gap of up to `max_gap_s` is fed as silence (the detector's state runs on through it),
    a longer one resets the detector and starts a new grid at the next chunk, and overlapping
    audio is dropped: the same rules the recogniser applies to its own buffer.
    """

    def __init__(self, detector: VoiceDetector, max_gap_s: float = MAX_GAP_FILL_S) -> None:
        self.detector = detector
        self.max_gap_s = max_gap_s
        self.frame_s = detector.frame_samples / AUDIO_RATE
        self._origin: float | None = None
        self._samples = 0  # fed since the origin, gap fill included
        self._frames = 0  # returned since the origin

    @staticmethod
    def accepts(frame: Frame) -> TypeGuard[AudioChunk]:
        """Whether `frame` is audio to label; the session asks it as it asks its extractors."""
        return isinstance(frame, AudioChunk)

    def push(self, chunk: AudioChunk) -> SpeechFrames:
        """The frames `chunk` completes (with those of a gap filled before it)."""
        samples = check_chunk(chunk)
        if self._origin is not None:
            expected = self._origin + self._samples / AUDIO_RATE
            continued = joined(expected, chunk.time, samples, self.max_gap_s)
            if continued is None:
                self._origin = None
            else:
                samples = continued
        if self._origin is None:
            self.detector.reset()
            self._origin, self._samples, self._frames = chunk.time, 0, 0
        probs = self.detector(samples) if len(samples) else np.zeros(0, np.float32)
        frames = SpeechFrames(probs, self._origin, self._frames, self.frame_s)
        self._samples += len(samples)
        self._frames += len(probs)
        return frames

    def label(self, chunk: AudioChunk) -> AudioChunk:
        """`chunk` carrying its frames, for every consumer of the session's audio."""
        return AudioChunk(chunk.samples, chunk.time, chunk.sample_rate, self.push(chunk))
