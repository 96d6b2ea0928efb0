"""Prosodic and spectral features of 16 kHz audio, in plain numpy, plus speech activity.

Frames start every 8 ms: 25 ms Hann windows for the spectrum, 40 ms for pitch (YIN).
Twelve frames pool into one step of 96 ms, which is exactly three 32 ms frames of the
Silero VAD, so speech and features share one grid. Layout of each step's vector
(`dim` = 35, float32):

    0       log10 RMS, mean over the step's frames (silence ≈ -5, loud speech ≈ -1)
    1       log10 RMS, standard deviation
    2       pitch: log2(F0 / 100 Hz), mean over voiced frames; 0 when none is voiced
    3       voicing probability (YIN: 1 - aperiodicity; 0 below -60 dBFS), mean
    4       speech probability (Silero VAD), max over the VAD frames the step overlaps
    5       zero-crossing rate (crossings per sample), mean
    6       spectral centroid / 8 kHz, mean
    7       spectral flatness (geometric / arithmetic mean of power), mean
    8       spectral 85 % rolloff / 8 kHz, mean
    9..21   MFCC 0..12 (40 HTK mel bands 20 Hz - 8 kHz, log10 power, orthonormal DCT), mean
    22..34  MFCC 0..12 deltas: least-squares slope over the step × 12 frames

Every step gets a vector: the signal is there even when nobody speaks. What the
engine needs to know is whether there is speech, so steps without it are reported as
`absent` with reason "no speech" (after `hangover` seconds, so pauses between words
do not flicker), and jumps in the input clock as "no audio".
"""

from __future__ import annotations

import asyncio

import numpy as np

from ..media.frames import AUDIO_RATE, AudioChunk, Frame, SpeechFrames
from .base import Extractor, FeatureUpdate, FeatureVector
from .vad import SileroVad, SpeechTrack, VoiceDetector

HOP = 128  # 8 ms
WINDOW = 400  # 25 ms, spectral features
N_FFT = 512
PITCH_WINDOW = 640  # 40 ms: two periods of the lowest F0
TAU_MIN, TAU_MAX = AUDIO_RATE // 500, AUDIO_RATE // 60  # F0 search range 60-500 Hz
YIN_THRESHOLD = 0.15
FRAMES_PER_STEP = 12
STEP_SAMPLES = FRAMES_PER_STEP * HOP  # 1536 samples
STEP = STEP_SAMPLES / AUDIO_RATE  # 0.096 s
LOOKAHEAD = PITCH_WINDOW - HOP  # samples past a step its last frame reads
N_MELS, N_MFCC = 40, 13
DIM = 9 + 2 * N_MFCC
_GAP = 0.05  # input clock jump (s) treated as missing audio rather than jitter
_SILENT_RMS = 1e-3  # -60 dBFS: no pitch below this


def _mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters, evenly spaced on the HTK mel scale."""
    high = 2595 * np.log10(1 + (AUDIO_RATE / 2) / 700)
    low = 2595 * np.log10(1 + 20 / 700)
    edges = 700 * (10 ** (np.linspace(low, high, N_MELS + 2) / 2595) - 1)
    freqs = np.arange(N_FFT // 2 + 1) * AUDIO_RATE / N_FFT
    rising = (freqs - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - freqs) / (edges[2:] - edges[1:-1])[:, None]
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def _dct() -> np.ndarray:
    """(N_MFCC, N_MELS) orthonormal DCT-II."""
    k, n = np.arange(N_MFCC)[:, None], np.arange(N_MELS)[None, :]
    basis = np.sqrt(2 / N_MELS) * np.cos(np.pi * k * (n + 0.5) / N_MELS)
    basis[0] /= np.sqrt(2)
    return basis.astype(np.float32)


_MEL, _DCT = _mel_filterbank(), _dct()
_HANN = np.hanning(WINDOW).astype(np.float32)
_FREQS = (np.arange(N_FFT // 2 + 1) * AUDIO_RATE / N_FFT).astype(np.float32)
_SLOPE = np.arange(FRAMES_PER_STEP) - (FRAMES_PER_STEP - 1) / 2
_SLOPE = (_SLOPE / (_SLOPE**2).sum() * FRAMES_PER_STEP).astype(np.float32)


def running_energy(audio: np.ndarray) -> np.ndarray:
    """Sum of squares of `audio[:i]` for every i (float64): any window's energy in two reads.

    Frames overlap (a sample is in 3 spectral and 5 pitch frames), so energies come from
    this one pass over the samples instead of being summed again in every frame.
    """
    return np.concatenate([[0.0], np.cumsum(np.square(audio, dtype=np.float64))])


def yin(
    audio: np.ndarray, count: int, energy: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """F0 (Hz) and aperiodicity (0 periodic … 1 noise) of the `count` PITCH_WINDOW frames of
    `audio` that start every HOP samples; `energy`: its `running_energy`, if already known.

    YIN's cumulative mean normalised difference, computed for all frames at once via
    FFT cross-correlation; the first dip below YIN_THRESHOLD (else the deepest one),
    followed down to its minimum and refined by parabolic interpolation.
    """
    energy = running_energy(audio) if energy is None else energy
    frames = np.lib.stride_tricks.sliding_window_view(audio, PITCH_WINDOW)[::HOP][:count]
    width = PITCH_WINDOW - TAU_MAX
    n_fft = PITCH_WINDOW  # the head is zero past `width`, so lags up to TAU_MAX never wrap
    head = np.fft.rfft(frames[:, :width], n_fft)
    corr = np.fft.irfft(np.conj(head) * np.fft.rfft(frames, n_fft), n_fft)[:, 1 : TAU_MAX + 1]
    taus = np.arange(1, TAU_MAX + 1)
    start = np.arange(count)[:, None] * HOP
    diff = (
        (energy[start + width] - energy[start])
        + (energy[start + width + taus] - energy[start + taus])
        - 2 * corr
    )
    cmnd = diff * taus / np.maximum(np.cumsum(diff, axis=1), 1e-12)
    search = cmnd[:, TAU_MIN - 1 :]
    below = search < YIN_THRESHOLD
    index = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
    rows, last = np.arange(len(frames)), search.shape[1] - 1
    while True:  # walk down to the bottom of the dip
        ahead = np.minimum(index + 1, last)
        step = search[rows, ahead] < search[rows, index]
        if not step.any():
            break
        index = index + step
    left = search[rows, np.maximum(index - 1, 0)]
    right = search[rows, np.minimum(index + 1, last)]
    centre = search[rows, index]
    curve = left - 2 * centre + right
    shift = np.where(curve > 1e-9, 0.5 * (left - right) / np.maximum(curve, 1e-9), 0.0)
    tau = index + TAU_MIN + np.clip(shift, -1.0, 1.0)
    return AUDIO_RATE / tau, np.clip(centre, 0.0, 1.0)


def frame_features(audio: np.ndarray, steps: int) -> np.ndarray:
    """(steps, DIM) vectors for audio holding steps × STEP_SAMPLES + LOOKAHEAD samples.

    Column 4 (speech probability) is left at 0 for the caller to fill.
    """
    count = steps * FRAMES_PER_STEP
    frames = np.lib.stride_tricks.sliding_window_view(audio, WINDOW)[::HOP][:count]
    start = np.arange(count) * HOP
    energy = running_energy(audio)  # per-sample sums, shared by the overlapping frames
    rms = np.sqrt((energy[start + WINDOW] - energy[start]) / WINDOW)
    log_rms = np.log10(rms + 1e-5)
    flips = np.concatenate([[0], np.cumsum(np.signbit(audio[1:]) != np.signbit(audio[:-1]))])
    zcr = (flips[start + WINDOW - 1] - flips[start]) / (WINDOW - 1)
    power = np.abs(np.fft.rfft(frames * _HANN, N_FFT)) ** 2
    total = power.sum(axis=1) + 1e-12
    centroid = power @ _FREQS / total / (AUDIO_RATE / 2)
    flatness = np.exp(np.mean(np.log(power + 1e-12), axis=1)) / (power.mean(axis=1) + 1e-12)
    rolloff = (np.cumsum(power, axis=1) < 0.85 * total[:, None]).sum(axis=1) / (N_FFT // 2)
    mfcc = np.log10(power @ _MEL.T + 1e-10) @ _DCT.T
    f0, aperiodicity = yin(audio, count, energy)
    voicing = np.where(rms > _SILENT_RMS, 1 - aperiodicity, 0.0)
    voiced = (aperiodicity < YIN_THRESHOLD) & (rms > _SILENT_RMS)

    def pooled(values: np.ndarray) -> np.ndarray:
        return values.reshape(steps, FRAMES_PER_STEP, *values.shape[1:])

    voiced_steps = pooled(voiced)
    pitch = np.where(voiced, np.log2(f0 / 100), 0.0)
    out = np.zeros((steps, DIM), dtype=np.float32)
    out[:, 0] = pooled(log_rms).mean(axis=1)
    out[:, 1] = pooled(log_rms).std(axis=1)
    out[:, 2] = pooled(pitch).sum(axis=1) / np.maximum(voiced_steps.sum(axis=1), 1)
    out[:, 3] = pooled(voicing).mean(axis=1)
    out[:, 5] = pooled(zcr).mean(axis=1)
    out[:, 6] = pooled(centroid).mean(axis=1)
    out[:, 7] = pooled(flatness).mean(axis=1)
    out[:, 8] = pooled(rolloff).mean(axis=1)
    out[:, 9 : 9 + N_MFCC] = pooled(mfcc).mean(axis=1)
    out[:, 9 + N_MFCC :] = np.einsum("f,sfc->sc", _SLOPE, pooled(mfcc))
    return out


class AcousticExtractor(Extractor):
    """Audio chunks in, one 35-d vector per 96 ms step out (layout in the module docstring).

    Costs 7-9 ms of compute per second of audio on a busy 2-core machine, the VAD apart
    (bench.acoustic.benchmark_acoustic), so it runs inline on the event loop for ordinary
    chunks and in a thread only when a push brings more than a second of audio. The
    watermark is the end of the last step.
    Speech probabilities come with the chunks from the session's VAD (`AudioChunk.speech`);
    chunks without them go through `vad` (default Silero) on a private track.
    """

    modality = "audio"
    dim = DIM
    stream = "audio"

    def __init__(
        self,
        *,
        speech_threshold: float = 0.5,
        hangover: float = 0.3,
        vad: VoiceDetector | None = None,
    ) -> None:
        self.speech_threshold = speech_threshold
        self.hangover = hangover
        self._track = SpeechTrack(vad if vad is not None else SileroVad())
        self._frames = _PendingSpeech()
        self._speech_until = -np.inf
        self._origin: float | None = None  # session time of the current grid's first sample
        self._done = 0  # samples of the grid already turned into steps
        self._buffer = np.zeros(0, dtype=np.float32)  # samples from self._done on
        self._watermark = 0.0

    async def push(self, frame: Frame) -> FeatureUpdate:
        if not isinstance(frame, AudioChunk):
            raise TypeError(f"AcousticExtractor takes AudioChunk, not {type(frame).__name__}")
        self._frames.add(frame.speech if frame.speech is not None else self._track.push(frame))
        out = FeatureUpdate(self.modality)
        if self._origin is None:
            self._origin = frame.time
        elif frame.time - self._clock() > _GAP:
            end = self._clock()
            self._run(out, final=True)
            out.absent.append((end, frame.time, "no audio"))
            self._watermark = frame.time
            self._restart(frame.time)
        self._buffer = np.concatenate([self._buffer, frame.samples.astype(np.float32, copy=False)])
        if len(self._buffer) > AUDIO_RATE:
            await asyncio.to_thread(self._run, out, final=False)
        else:
            self._run(out, final=False)
        out.watermark = self._watermark
        return out

    async def flush(self) -> FeatureUpdate:
        out = FeatureUpdate(self.modality)
        await asyncio.to_thread(self._run, out, final=True)
        out.watermark = self._watermark
        return out

    def _clock(self) -> float:
        """Session time just after the last sample received."""
        assert self._origin is not None
        return self._origin + (self._done + len(self._buffer)) / AUDIO_RATE

    def _restart(self, origin: float | None) -> None:
        """Start a new sample grid at `origin` (None: wait for the next chunk's time)."""
        self._origin, self._done = origin, 0
        self._buffer = self._buffer[:0]

    def _run(self, out: FeatureUpdate, final: bool) -> None:
        """Turn every complete step in the buffer (all of it when `final`) into output."""
        if self._origin is None:
            return
        audio = self._buffer
        if final:
            steps = -(-len(audio) // STEP_SAMPLES)
            padding = steps * STEP_SAMPLES + LOOKAHEAD - len(audio)
            audio = np.concatenate([audio, np.zeros(padding, np.float32)])
        else:
            steps = max(0, (len(audio) - LOOKAHEAD) // STEP_SAMPLES)
        if steps:
            self._emit(out, audio, steps)
        if final:
            self._restart(None)
        else:
            self._done += steps * STEP_SAMPLES
            self._buffer = self._buffer[steps * STEP_SAMPLES :]

    def _emit(self, out: FeatureUpdate, audio: np.ndarray, steps: int) -> None:
        assert self._origin is not None
        vectors = frame_features(audio, steps)
        received = self._done + len(self._buffer)
        first = self._done + np.arange(steps) * STEP_SAMPLES  # times from sample counts
        starts = (self._origin + first / AUDIO_RATE).tolist()
        stops = (self._origin + np.minimum(first + STEP_SAMPLES, received) / AUDIO_RATE).tolist()
        speech = self._frames.take(starts, stops)
        vectors[:, 4] = speech
        for index, (start, stop) in enumerate(zip(starts, stops, strict=True)):
            out.vectors.append(FeatureVector(start, stop, vectors[index]))
            if speech[index] >= self.speech_threshold:
                self._speech_until = stop + self.hangover
            elif start >= self._speech_until - 1e-9:
                if out.absent and out.absent[-1][1] == start:
                    out.absent[-1] = (out.absent[-1][0], stop, "no speech")
                else:
                    out.absent.append((start, stop, "no speech"))
            self._watermark = stop


class _PendingSpeech:
    """VAD frames received but not yet pooled into steps (a few, on the session clock)."""

    def __init__(self) -> None:
        self._start = np.zeros(0)
        self._end = np.zeros(0)
        self._prob = np.zeros(0, np.float32)

    def add(self, frames: SpeechFrames) -> None:
        if len(frames.probs):
            ends = frames.ends()
            self._start = np.concatenate([self._start, ends - frames.frame_s])
            self._end = np.concatenate([self._end, ends])
            self._prob = np.concatenate([self._prob, frames.probs])

    def take(self, starts: list[float], stops: list[float]) -> np.ndarray:
        """Per step [start, stop): the highest probability of the frames it overlaps (0 if
        none, e.g. the unfinished frame at the end of the input); frames ending by the last
        stop are done with."""
        eps = 1e-6  # the two grids count time from the same origin in different units
        lo, hi = np.array(starts)[:, None] + eps, np.array(stops)[:, None] - eps
        overlap = (self._end[None, :] > lo) & (self._start[None, :] < hi)
        speech = np.where(overlap, self._prob[None, :], 0.0).max(axis=1, initial=0.0)
        keep = self._end > stops[-1] + eps
        self._start, self._end, self._prob = self._start[keep], self._end[keep], self._prob[keep]
        return speech
