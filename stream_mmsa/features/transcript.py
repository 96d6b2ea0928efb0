"""The streaming recogniser as the text modality's extractor.

The recogniser (asr/stream.py) speaks in transcripts: final and interim words, a decoded
watermark and a committed one. This adapter gives the session the same contract as every
other extractor: each update puts the final words on the text timeline (where words are;
their token states come per window, from the sentence they belong to) and carries the
transcript itself for the session's transcript events.
"""

from __future__ import annotations

import numpy as np

from ..media.frames import AudioChunk, Frame
from .asr.stream import StreamingTranscriber
from .asr.types import AsrConfig, TranscriptUpdate
from .asr.whisper import WhisperAsr
from .base import Backlog, Extractor, FeatureUpdate, FeatureVector

NO_TEXT = np.zeros(0, dtype=np.float32)
"""Text timeline entries mark where words are; their token states are computed per window."""


class TranscriptExtractor(Extractor):
    """Audio chunks in, committed words out as text vectors, with the transcript beside them.

    A decode takes longer than a chunk, so it runs on its own task behind a queue of 250
    chunks (10 s at 40 ms). `final_watermark`: the watermark is the committed time instead
    of the decoded one, so a window waits for the words before it to be final, not just
    decoded, and its transcript never depends on how far the recogniser got (offline runs).
    """

    modality = "text"
    dim = 0  # NO_TEXT: the text's width is the text encoder's, known per window
    stream = "audio"
    backlog = Backlog(frames=250, dropped_as="recogniser_audio_chunks_dropped")

    def __init__(
        self,
        model: WhisperAsr | None = None,
        config: AsrConfig | None = None,
        *,
        final_watermark: bool = False,
    ) -> None:
        self.transcriber = StreamingTranscriber(model, config)
        self.final_watermark = final_watermark

    async def push(self, frame: Frame) -> FeatureUpdate:
        if not isinstance(frame, AudioChunk):
            raise TypeError(f"TranscriptExtractor takes AudioChunk, not {type(frame).__name__}")
        return self._update(await self.transcriber.push(frame))

    async def flush(self) -> FeatureUpdate:
        return self._update(await self.transcriber.flush())

    async def close(self) -> None:
        await self.transcriber.close()

    def losses(self) -> dict[str, float]:
        return {"asr_skipped_s": round(self.transcriber.stats.skipped_s, 2)}

    def _update(self, transcript: TranscriptUpdate) -> FeatureUpdate:
        vectors = [FeatureVector(w.start, w.end, NO_TEXT) for w in transcript.final]
        absent = [(start, end, "asr behind") for start, end in transcript.skipped]
        watermark = transcript.committed_to if self.final_watermark else transcript.watermark
        return FeatureUpdate(self.modality, vectors, watermark, absent, transcript)
