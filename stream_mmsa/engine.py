"""One session's pipeline: source → extractors → aligner → shared inference → events → sinks.

The event loop only moves messages: face detection, ASR and the model run on
their own threads. Each extractor is fed by its own task, so a slow one (ASR)
never delays another (the face) or the window cadence: windows close on time
and say what is late instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .config import EngineConfig
from .events import (
    ModalityReport,
    Sentiment,
    SentimentEvent,
    StatusEvent,
    TranscriptEvent,
    Word,
    sentiment_label,
)
from .features.acoustic import AcousticExtractor
from .features.asr import AsrConfig, StreamingTranscriber, TranscriptUpdate, load_asr_model
from .features.base import FeatureUpdate, FeatureVector
from .features.face import FaceExtractor
from .inference import InferenceRequest, InferenceWorker
from .media.frames import AudioChunk, VideoFrame
from .media.sources.base import Source
from .model.types import MODALITIES, FusionOutput
from .sinks.base import AnyEvent, Sink
from .windowing import USED_STATES, Aligner, Window, WindowClock

NO_TEXT = np.zeros(0, dtype=np.float32)
"""Text timeline entries mark where words are; their token states are computed per window."""


class Runtime:
    """What every session in the process shares: the models, loaded once, and the worker."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        from .train.run import load_for_eval

        self.config = config or EngineConfig()
        torch.set_num_threads(self.config.model_threads)
        self.model, self.model_info, self.text_encoder = load_for_eval(self.config.checkpoint)
        if self.text_encoder is None:
            raise ValueError("the engine needs a checkpoint trained on transcripts (text)")
        self.dims = dict(self.model.fusion.config.input_dims)
        self.asr_model = load_asr_model(
            self.config.asr_model, self.config.asr_model_path, cpu_threads=self.config.threads
        )
        self.worker = InferenceWorker(
            self.model, imagine=self.config.imagine, max_batch=self.config.max_batch
        )
        self._text_pool = ThreadPoolExecutor(1, thread_name_prefix="text-encoder")

    async def __aenter__(self) -> Runtime:
        self.worker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.worker.close()
        self._text_pool.shutdown(wait=False)

    async def encode_text(self, text: str) -> np.ndarray:
        """Frozen-bottom token states (T, H) of one window's transcript, off the loop."""

        def run() -> np.ndarray:
            states, mask = self.text_encoder.encode_bottom([text])
            return states[0][mask[0]].numpy()

        return await asyncio.get_running_loop().run_in_executor(self._text_pool, run)


@dataclass
class SessionSummary:
    session: str
    duration: float = 0.0
    events: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    states: dict[str, Counter[str]] = field(
        default_factory=lambda: {m: Counter() for m in MODALITIES}
    )
    dropped: dict[str, int] = field(default_factory=dict)
    transcript: list[str] = field(default_factory=list)

    def latency(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


class Session:
    """One stream of media analysed end to end; `run()` returns when the source ends."""

    def __init__(
        self,
        runtime: Runtime,
        source: Source,
        sink: Sink,
        *,
        session_id: str | None = None,
        realtime: bool = True,
        room: str | None = None,
        participant: str | None = None,
        on_event: Callable[[AnyEvent], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.source = source
        self.sink = sink
        self.id = session_id or uuid.uuid4().hex[:12]
        self.realtime = realtime
        self.tags = {"room": room, "participant": participant}
        self.on_event = on_event
        self.summary = SessionSummary(self.id)
        self.aligner = Aligner(self.id, runtime.config.window)
        self._seq = 0
        self._emit_lock = asyncio.Lock()
        self._states: dict[str, tuple[str, str]] = {}
        self._interim = ""
        self._input_end: float | None = None

    async def run(self) -> SessionSummary:
        acoustic = AcousticExtractor()
        face = FaceExtractor(max_fps=self.runtime.config.face_max_fps)
        asr_config = AsrConfig(
            model=self.runtime.config.asr_model,
            max_pending_s=8.0 if self.realtime else None,
        )
        asr = StreamingTranscriber(self.runtime.asr_model, asr_config)
        audio: asyncio.Queue[AudioChunk | None] = asyncio.Queue()
        origin = self.source.origin if self.source.origin is not None else time.monotonic()
        clock = WindowClock("realtime" if self.realtime else "watermark", start=origin)
        windows = asyncio.create_task(self._windows(clock))
        transcribe = asyncio.create_task(self._transcribe(asr, audio))
        try:
            end = self._input_end = await self._pump(acoustic, face, audio)
            await audio.put(None)
            await transcribe
            self.aligner.update(await acoustic.flush())
            self.aligner.update(await face.flush())
            self.aligner.finish(end)
            self.summary.duration = end
            await windows
        finally:
            for task in (windows, transcribe):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(windows, transcribe, return_exceptions=True)
            await asyncio.gather(acoustic.close(), face.close(), asr.close(), self.source.close())
        self.summary.dropped = {
            **{f"aligner_{m}": n for m, n in self.aligner.dropped.items() if n},
            "face_frames_dropped": face.stats.dropped,
            "asr_skipped_s": round(asr.stats.skipped_s, 2),
        }
        return self.summary

    async def _pump(
        self, acoustic: AcousticExtractor, face: FaceExtractor, audio: asyncio.Queue
    ) -> float:
        """Move frames from the source to the extractors; returns the session time it ended."""
        if self.source.has_audio:
            self.aligner.attach("audio")
            self.aligner.attach("text")
        if self.source.has_video:
            self.aligner.attach("vision")
        end = 0.0
        async for frame in self.source.frames():
            if isinstance(frame, AudioChunk):
                end = max(end, frame.end)
                update = await acoustic.push(frame)
                self.aligner.update(update)
                self._mirror_silence(update)
                audio.put_nowait(frame)
            elif isinstance(frame, VideoFrame):
                end = max(end, frame.time)
                self.aligner.update(await face.push(frame))
                if not self.realtime:  # as fast as possible: analyse frames at the face rate
                    self.aligner.update(await face.flush())
        return end

    def _mirror_silence(self, update: FeatureUpdate) -> None:
        """Nobody speaking means no words: the text timeline gets the same 'no speech'."""
        silent = [a for a in update.absent if a[2] == "no speech"]
        if silent:
            self.aligner.update(FeatureUpdate("text", absent=silent, watermark=0.0))

    async def _transcribe(self, asr: StreamingTranscriber, audio: asyncio.Queue) -> None:
        while (chunk := await audio.get()) is not None:
            await self._on_transcript(await asr.push(chunk))
        await self._on_transcript(await asr.flush())

    async def _on_transcript(self, update: TranscriptUpdate) -> None:
        vectors = [FeatureVector(w.start, w.end, NO_TEXT) for w in update.final]
        absent = [(s, e, "asr behind") for s, e in update.skipped]
        self.aligner.add_words(update.final)
        self.aligner.update(FeatureUpdate("text", vectors, update.watermark, absent))
        if update.final:
            self.summary.transcript += [w.word.strip() for w in update.final]
            await self._emit(self._transcript_event(update.final, final=True))
        interim = " ".join(w.word.strip() for w in update.interim)
        if interim and interim != self._interim:
            await self._emit(self._transcript_event(update.interim, final=False))
        self._interim = interim

    def _transcript_event(self, words, final: bool) -> TranscriptEvent:
        return TranscriptEvent(
            session=self.id,
            seq=0,
            final=final,
            text=" ".join(w.word.strip() for w in words),
            words=[
                Word(word=w.word.strip(), start=w.start, end=w.end, prob=min(max(w.prob, 0), 1))
                for w in words
            ],
            **self.tags,
        )

    async def _windows(self, clock: WindowClock) -> None:
        async for window in clock.windows(self.aligner):
            if self._input_end is not None and window.end > self._input_end + 1e-6:
                continue  # real time runs on while the extractors flush: no media there
            window = await self._with_text(window)
            batch = window.to_batch(self.runtime.dims)
            out = await self.runtime.worker.submit(InferenceRequest(self.id, batch))
            for modality in MODALITIES:
                await self._status(window, modality)
            await self._emit(self._sentiment_event(window, out))

    async def _with_text(self, window: Window) -> Window:
        """Token states for the window's transcript; no words means no text features."""
        if window.states["text"] not in USED_STATES or not window.transcript:
            return replace(window, features={**window.features, "text": None})
        states = await self.runtime.encode_text(window.transcript)
        return replace(window, features={**window.features, "text": states})

    async def _status(self, window: Window, modality: str) -> None:
        state, reason = window.states[modality], window.reasons.get(modality, "")
        self.summary.states[modality][state] += 1
        if self._states.get(modality, ("", ""))[0] == state:
            return
        self._states[modality] = (state, reason)
        await self._emit(
            StatusEvent(
                session=self.id,
                seq=0,
                modality=modality,
                state=state,
                since=window.start if state in USED_STATES else window.end,
                reason=reason,
                **self.tags,
            )
        )

    def _sentiment_event(self, window: Window, out: FusionOutput) -> SentimentEvent:
        score = float(out.score[0])
        reports = {}
        for j, m in enumerate(MODALITIES):
            used = window.states[m] in USED_STATES and window.features[m] is not None
            imagined = bool(out.imagined[0, j])
            reports[m] = ModalityReport(
                state=window.states[m],
                weight=min(max(float(out.weights[0, j]), 0.0), 1.0),
                action="used" if used else "imagined" if imagined else "skipped",
                gain=None if used else round(float(out.gain[0, j]), 4),
            )
        latency = (time.monotonic() - window.wall_end) * 1000
        self.summary.latencies_ms.append(latency)
        return SentimentEvent(
            session=self.id,
            seq=0,
            window={"start": window.start, "end": window.end},
            latency_ms=round(latency, 2),
            sentiment=Sentiment(
                score=round(score, 4),
                label=sentiment_label(score),
                confidence=min(max(float(out.confidence[0]), 0.0), 1.0),
            ),
            modalities=reports,
            transcript=window.transcript,
            **self.tags,
        )

    async def _emit(self, event: SentimentEvent | TranscriptEvent | StatusEvent) -> None:
        """Number the event (gapless per session) and hand it to the sinks in order."""
        async with self._emit_lock:
            event = event.model_copy(update={"seq": self._seq})
            self._seq += 1
            self.summary.events[event.type] += 1
            await self.sink.send(event)
            if self.on_event:
                self.on_event(event)
