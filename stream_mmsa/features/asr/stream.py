"""The asyncio face of the recogniser that the engine uses (`StreamingTranscriber`)."""

from __future__ import annotations

import asyncio

from ...media.frames import AudioChunk
from ..vad import SileroVad, check_chunk
from .policy import TranscriberCore
from .types import AsrConfig, AsrStats, TranscriptUpdate, Word
from .whisper import WhisperAsr, load_asr_model


class StreamingTranscriber:
    """Per-session streaming ASR for the engine: `await push(chunk)`, `await flush()`.

    Each step runs on a thread of the shared model's pool, never on the event loop; the
    decodes of all sessions meet on the model's one batching thread (batch.py).
    With `max_pending_s` set (real time), push returns after at most its chunk's duration:
    a caller awaiting every push keeps real-time pace, audio arriving during a slow decode
    queues here and goes to the next job (its oldest part skipped beyond the bound), and
    results not ready yet come with a later push. With `max_pending_s=None`, push waits.
    """

    def __init__(self, model: WhisperAsr | None = None, config: AsrConfig | None = None) -> None:
        self.config = config or AsrConfig()
        cfg = self.config
        self.model = model or load_asr_model(
            cfg.model, cfg.model_path, cpu_threads=cfg.cpu_threads, compute_type=cfg.compute_type
        )
        self.core = TranscriberCore(self.model, cfg, SileroVad() if cfg.vad else None)
        self._inbox: list[AudioChunk] = []
        self._ready: list[TranscriptUpdate] = []
        self._job: asyncio.Future[TranscriptUpdate] | None = None
        self._interim: list[Word] = []
        self._watermark = 0.0
        self._committed_to = 0.0
        self._received = 0.0

    @property
    def stats(self) -> AsrStats:
        return self.core.stats

    async def push(self, chunk: AudioChunk) -> TranscriptUpdate:
        """Queue a chunk, decode what is due, return everything finished so far."""
        check_chunk(chunk)
        self._inbox.append(chunk)
        self._received = max(self._received, chunk.end)
        loop = asyncio.get_running_loop()
        wait = None if self.config.max_pending_s is None else chunk.duration
        deadline = None if wait is None else loop.time() + wait
        while True:
            if self._job is not None:
                left = None if deadline is None else max(deadline - loop.time(), 0.0)
                await asyncio.wait({self._job}, timeout=left)
                if not self._job.done():
                    break
                job, self._job = self._job, None
                self._ready.append(job.result())  # a decoder error surfaces here, once
            if not self._inbox:
                break
            batch, self._inbox = self._inbox, []
            self._job = loop.run_in_executor(self.model.executor, self.core.process, batch)
        return self._collect()

    async def flush(self) -> TranscriptUpdate:
        """End of input: wait for the running decode, then decode and commit the rest."""
        if self._job is not None:
            job, self._job = self._job, None
            self._ready.append(await job)
        batch, self._inbox = self._inbox, []
        loop = asyncio.get_running_loop()
        self._ready.append(
            await loop.run_in_executor(self.model.executor, self.core.process, batch)
        )
        self._ready.append(await loop.run_in_executor(self.model.executor, self.core.flush))
        return self._collect()

    async def close(self) -> None:
        """Wait for a running decode; the shared model stays loaded for other sessions."""
        if self._job is not None:
            await asyncio.wait({self._job})
            self._job = None

    def _collect(self) -> TranscriptUpdate:
        """Merge finished updates; without new ones, repeat the last interim and watermark."""
        ready, self._ready = self._ready, []
        merged = TranscriptUpdate(
            interim=list(self._interim),
            watermark=self._watermark,
            committed_to=self._committed_to,
        )
        for update in ready:
            merged.final.extend(update.final)
            merged.skipped.extend(update.skipped)
            merged.interim = update.interim
            merged.watermark = update.watermark
            merged.committed_to = update.committed_to
        self._interim, self._watermark = list(merged.interim), merged.watermark
        self._committed_to = merged.committed_to
        merged.pending_s = max(self._received - merged.watermark, 0.0)
        return merged
