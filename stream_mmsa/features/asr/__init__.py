"""Streaming speech recognition on faster-whisper: words with session times, interim and final.

Why not re-transcribe the growing buffer (LocalAgreement as in whisper_streaming): Whisper's
encoder pads every call to 30 s, so each step costs a full pass and the cost grows with the
buffer (1.2 s of compute per audio second measured here). Instead:

- Silero VAD (shipped in faster-whisper) gates decoding: silence is never decoded, which is
  what removes hallucinations on silence, and a pause ends the utterance and commits its tail.
  In the engine its probabilities come with the chunks from the session's one VAD (vad.py).
- Every `step_s` of speech, only a bounded window is decoded: the uncommitted tail plus about
  `context_s` of already committed audio, followed by `pad_s` of silence (without it Whisper
  does not see where speech stops and loops). CTranslate2's encoder takes windows shorter
  than 30 s at a cost about linear in length, so a step costs O(window), not O(session).
- The committed words inside the window are forced as the decoder prefix and older committed
  text is the prompt: the decoder only predicts the new words, and the window can start in a
  gap between committed words instead of in the middle of the next one.
- Commit policy: LocalAgreement-2 on the new words, plus a stability horizon, first-sight
  commits of sure words and the end of a VAD utterance (see `TranscriberCore`). Guards
  against the loops short windows provoke: a token budget per second of audio, repeated
  n-gram truncation, compression ratio, no-speech probability with average
  log-probability, and no temperature fallback.
- What a decode costs is mostly decoder steps (one per new or forced token, ~4 ms each for
  tiny.en on these cores), then the encoder and the word alignment: the defaults decode once
  per second of speech after the first 2 s of an utterance and keep the uncommitted tail
  short; the log-mel features skip the silence padding and apply the filter bank sparsely,
  outside BLAS, whose spinning worker threads cost more than the transform (`log_mel`); the
  no-speech probability is asked only without a prefix.
- Falling behind never accumulates delay: when more than `max_pending_s` of audio waits
  undecoded, the oldest is skipped, counted and reported.
- Sessions share the model and its one decoding thread: windows that several sessions ask
  for at the same time, of similar length, are decoded in one batch (batch.py).

`TranscriberCore` is synchronous and model-agnostic (any `WindowDecoder`, any `VoiceDetector`),
so the policy is unit-tested without a model or an event loop. `StreamingTranscriber` is the
asyncio face the engine uses: each session's steps run on a thread of the model's
pool, and their decodes meet on the model's batching thread.
"""

from .guards import (
    agreed_prefix,
    compression_ratio,
    cut_collapsed,
    cut_echo,
    cut_repetition,
    normalize_word,
)
from .policy import TranscriberCore
from .stream import StreamingTranscriber
from .types import (
    DEFAULT_MODEL,
    AsrConfig,
    AsrStats,
    Hypothesis,
    TranscriptUpdate,
    WindowDecoder,
    Word,
)
from .whisper import WhisperAsr, load_asr_model, resolve_asr_model

__all__ = [
    "DEFAULT_MODEL",
    "AsrConfig",
    "AsrStats",
    "Hypothesis",
    "StreamingTranscriber",
    "TranscriberCore",
    "TranscriptUpdate",
    "WhisperAsr",
    "WindowDecoder",
    "Word",
    "agreed_prefix",
    "compression_ratio",
    "cut_collapsed",
    "cut_echo",
    "cut_repetition",
    "load_asr_model",
    "normalize_word",
    "resolve_asr_model",
]
