"""One session's pipeline: source → extractors → aligner → shared inference → events → sinks.

The event loop only moves messages: face detection, ASR and the model run on
their own threads. The session runs the extractors of a list (extractors.py) through one
contract (features/base.py); a slow one (ASR) runs on its own task, so it never delays
another (the face) or the window cadence: windows close on time and say what is late
instead of waiting for it. A window's score is the fusion model's,
moved by the face prior (model/face_prior.py); its event keeps the model's own score as
`sentiment.model_score` whenever the prior ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .config import EngineConfig
from .device import load_asr_placed, resolve_placement
from .events import (
    AnyEvent,
    ModalityReport,
    Sentiment,
    SentimentEvent,
    SessionEvent,
    SessionState,
    StatusEvent,
    TranscriptEvent,
    Word,
    sentiment_label,
)
from .extractors import EXTRACTORS, ExtractorContext, ExtractorFactory, Feed, feed, needed
from .features.asr import TranscriptUpdate, load_asr_model
from .features.asr import Word as HeardWord
from .features.base import FeatureUpdate, Stream, frame_end
from .features.expression import summarize
from .features.vad import SileroVad, SpeechTrack
from .inference import InferenceRequest, InferenceWorker, TextWorker
from .media.frames import Frame
from .media.sources.base import Source
from .model.face_prior import apply_face_prior
from .model.quality import Recall, quality_signals
from .model.types import MODALITIES, FusionOutput
from .sinks.base import Sink
from .sinks.group import SinkFailed, SinkFailure
from .windowing import USED_STATES, Aligner, Window, WindowClock

log = logging.getLogger(__name__)


class Runtime:
    """What every session in the process shares: the models, loaded once, and the worker.

    `config.device` decides where they run (device.py); `placement` says where they ended up.
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        from .train.run import load_for_eval

        self.config = config or EngineConfig()
        torch.set_num_threads(self.config.model_threads)
        placement = resolve_placement(self.config.device)
        self.model, self.model_info, self.text_encoder = load_for_eval(
            self.config.checkpoint, placement.torch
        )
        if self.text_encoder is None:
            raise ValueError("the engine needs a checkpoint trained on transcripts (text)")
        if self.config.ensemble_models is not None:
            self.model.keep_first(self.config.ensemble_models)
        self.dims = dict(self.model.fusion.config.input_dims)
        self.asr_model, self.placement = load_asr_placed(
            self.config.device,
            placement,
            lambda device, compute_type: load_asr_model(
                self.config.asr_model,
                self.config.asr_model_path,
                cpu_threads=self.config.threads,
                device=device,
                compute_type=compute_type,
            ),
        )
        log.info("models: %s", self.placement.describe())
        self.worker = InferenceWorker(
            self.model,
            imagine=self.config.imagine,
            max_batch=self.config.max_batch,
            device=self.placement.torch,
        )
        self.text_worker = TextWorker(self.text_encoder, max_per_session=2)

    async def __aenter__(self) -> Runtime:
        self.worker.start()
        self.text_worker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.worker.close()
        await self.text_worker.close()

    async def encode_text(self, session: str, text: str) -> np.ndarray:
        """Frozen-bottom token states (T, H) of one window's transcript, batched with the
        other sessions' windows (inference.TextWorker), off the loop."""
        return await self.text_worker.encode(session, text)


ROLLING = 2000
"""Latencies and transcript words a summary keeps: a server session lasts hours."""


@dataclass
class SessionSummary:
    """What a session did, in bounded memory: counters plus the most recent figures."""

    session: str
    duration: float = 0.0
    events: Counter[str] = field(default_factory=Counter)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=ROLLING))
    states: dict[str, Counter[str]] = field(
        default_factory=lambda: {m: Counter() for m in MODALITIES}
    )
    dropped: dict[str, float] = field(default_factory=dict)
    transcript: deque[str] = field(default_factory=lambda: deque(maxlen=ROLLING))
    words: int = 0
    ended: str = ""
    """Why the session ended: "source ended", "stopped: …" or "failed: …"."""
    error: BaseException | None = None
    signal: int | None = None
    """The signal that stopped the session, if one did (set by whoever handles signals)."""
    sink_failures: list[SinkFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The input was analysed to its end and every sink kept every event."""
        return self.error is None and not self.sink_failures

    def latency(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


class Session:
    """One stream of media analysed end to end; `run()` returns when the source ends.

    Its extractors come from `extractors`, a list of factories (default `EXTRACTORS`).
    Supervised: the pump, the extractors' own tasks (the recogniser's) and the window clock
    run in one task group, so a failure in any of them ends the session in order (a
    `failed` session event, the windows already closed kept) instead of stalling it.
    `stop()` drains: the source is no longer read, what was read is analysed and emitted,
    then the session ends.
    """

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
        extractors: Sequence[ExtractorFactory] = EXTRACTORS,
    ) -> None:
        self.runtime = runtime
        self.source = source
        self.sink = sink
        self.id = session_id or uuid.uuid4().hex[:12]
        self.realtime = realtime
        self.tags = {"room": room, "participant": participant}
        self.on_event = on_event
        self.factories = extractors
        self.summary = SessionSummary(self.id)
        self.aligner = Aligner(self.id, runtime.config.window)
        self._seq = 0
        self._emit_lock = asyncio.Lock()
        self._order = MediaOrder(("windows", "text"))
        self._states: dict[str, tuple[str, str]] = {}
        self._interim = ""
        self._input_end: float | None = None
        self._read_to = 0.0
        self._stop_reason: str | None = None
        self._stopped = asyncio.Event()
        self._losses: dict[str, float] = {}
        self._stopped_streams: set[str] = set()
        self._feeds: list[Feed] = []
        self._attached: set[str] = set()
        self._recall: Recall | None = None
        self._pauses: deque[tuple[float, float]] = deque(maxlen=64)

    def stop(self, reason: str) -> None:
        """End the session early but in order: stop reading, analyse what came in, flush."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._stopped.set()

    async def run(self) -> SessionSummary:
        context = ExtractorContext(self.runtime.config, self.runtime.asr_model, self.realtime)
        streams: dict[Stream, bool] = {
            "audio": self.source.has_audio,
            "video": self.source.has_video,
        }
        extractors = [factory(context) for factory in self.factories if needed(factory, streams)]
        self._feeds = [  # an extractor whose stream the source lacks is never fed nor flushed
            feed(e, self._take, realtime=self.realtime) for e in extractors if streams[e.stream]
        ]
        if self.source.origin is None:  # recorded media: paced on the windows' own clock
            self.source.origin = time.monotonic()
        clock = WindowClock("realtime" if self.realtime else "watermark", start=self.source.origin)
        try:
            async with asyncio.TaskGroup() as tasks:
                for each in self._feeds:
                    each.start(tasks)
                tasks.create_task(self._windows(clock))
                tasks.create_task(self._drive())
        except Exception as failure:  # an ExceptionGroup: the first error is the cause
            error = _first_error(failure)
            self.summary.error = error
            self.summary.ended = f"failed: {_describe(error)}"
            log.error("session %s failed", self.id, exc_info=error)
        finally:
            await asyncio.gather(
                *(e.close() for e in extractors), self.source.close(), return_exceptions=True
            )
        self.summary.duration = self._input_end if self._input_end is not None else self._read_to
        self.summary.dropped = {
            **{f"aligner_{m}": n for m, n in self.aligner.dropped.items() if n},
            **{k: v for e in extractors for k, v in e.losses().items()},
            **self._losses,
        }
        await self._end()
        return self.summary

    async def _end(self) -> None:
        """The session's last event says why it ended: `failed` with the error, or `ended`."""
        summary = self.summary
        if summary.error is None:
            stopped, because = self._stop_reason, self.source.ended_because
            summary.ended = (
                f"stopped: {stopped}"
                if stopped is not None
                else f"source ended: {because}"
                if because
                else "source ended"
            )
        state = "ended" if summary.error is None else "failed"
        counts = {k: float(v) for k, v in summary.dropped.items() if v}
        try:
            for lane in self._order.lanes:  # a failed session leaves events held: in order
                await self._advance(lane, math.inf)
            await self._emit(self._session_event(state, summary.ended, counts))
        except Exception as error:  # the sink itself is what failed: the summary still says so
            log.warning("session %s: final event not delivered: %s", self.id, _describe(error))

    def _session_event(
        self, state: SessionState, reason: str, counts: dict[str, float] | None = None
    ) -> SessionEvent:
        return SessionEvent(
            session=self.id, seq=0, state=state, reason=reason, counts=counts or {}, **self.tags
        )

    async def _drive(self) -> None:
        """Pump the source to its end (or a stop), then flush every extractor in order."""
        end = await self._pump()
        self._input_end = end
        for each in self._feeds:
            await each.finish()
        self.aligner.finish(end)

    async def _pump(self) -> float:
        """Move frames from the source to the extractors; returns the session time it ended.

        Audio goes through the session's one VAD first: each chunk carries its speech
        probabilities to the acoustic extractor and the recogniser, so Silero runs once.
        """
        for each in self._feeds:
            self.aligner.attach(each.extractor.modality)
            self._attached.add(each.extractor.modality)
        if "text" not in self._attached:  # no words will come: windows need not wait for them
            await self._advance("text", math.inf)
        speech = SpeechTrack(SileroVad())
        async for frame in _until(self._stopped, self.source.frames()):
            if speech.accepts(frame):
                frame = speech.label(frame)
            self._read_to = max(self._read_to, frame_end(frame))
            for each in self._feeds:
                if each.extractor.accepts(frame):
                    await each.push(frame)
        return self._read_to

    async def _take(self, update: FeatureUpdate, heard_to: float) -> None:
        """One extractor's update into the session. Transcript events first, then the
        aligner: a window closed by these words comes after them. `heard_to`: the media
        the extractor has taken, the transcript events' media time."""
        if update.transcript is not None:
            await self._on_transcript(update.transcript, heard_to)
        self.aligner.update(update)
        self._mirror_silence(update)

    def _mirror_silence(self, update: FeatureUpdate) -> None:
        """Nobody speaking means no words: the text timeline gets the same 'no speech'."""
        silent = [a for a in update.absent if a[2] == "no speech"]
        if silent and "text" in self._attached:
            self.aligner.update(FeatureUpdate("text", absent=silent, watermark=0.0))
            self._pauses.extend((start, end) for start, end, _ in silent)

    async def _on_transcript(self, update: TranscriptUpdate, heard_to: float) -> None:
        """Transcript events for new final words and a changed interim, then the words for
        the windows' transcripts."""
        if update.final:
            self.summary.transcript.extend(w.word.strip() for w in update.final)
            self.summary.words += len(update.final)
            event = self._transcript_event(update.final, final=True)
            await self._emit(event, ("text", heard_to))
        interim = " ".join(w.word.strip() for w in update.interim)
        if interim and interim != self._interim:
            event = self._transcript_event(update.interim, final=False)
            await self._emit(event, ("text", heard_to))
        self._interim = interim
        await self._advance("text", heard_to)
        # Live windows also take the interim words; offline ones wait for final words only,
        # so what they hold never depends on how far the recogniser had got.
        self.aligner.add_words(update.final, update.interim if self.realtime else ())

    def _transcript_event(self, words: list[HeardWord], final: bool) -> TranscriptEvent:
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
            await self._report_losses(window.end)
            await self._emit(self._sentiment_event(window, out), ("windows", window.end))
            await self._advance("windows", window.end)
        await self._advance("windows", math.inf)

    async def _report_losses(self, at: float) -> None:
        """Media the session had to drop becomes a `degraded` event when it grows; a stream
        that stopped for good (a device unplugged) makes its modalities `missing` from then."""
        for stream, (since, reason) in self.source.stopped_streams().items():
            if stream not in self._stopped_streams:
                self._stopped_streams.add(stream)
                fed = [e.extractor.modality for e in self._feeds if e.extractor.stream == stream]
                for modality in dict.fromkeys(fed):
                    self.aligner.detach(modality, since, reason)
        losses = {k: float(v) for k, v in self.source.losses().items() if v}
        losses |= {k: v for each in self._feeds for k, v in each.losses().items() if v}
        grown = {k: v for k, v in losses.items() if v > self._losses.get(k, 0.0)}
        if grown:
            self._losses.update(grown)
            reason = ", ".join(f"{k.replace('_', ' ')}: {v:g}" for k, v in sorted(grown.items()))
            event = self._session_event("degraded", reason, dict(self._losses))
            await self._emit(event, ("windows", at))

    async def _with_text(self, window: Window) -> Window:
        """Token states for the window's transcript; no words means no text features.

        A window whose text is late carries the latest text the session had (recalled:
        what the evaluator may imagine it from) and the quality signals saying how old it
        is and whether a pause has started a new utterance since.
        """
        if window.states["text"] not in USED_STATES or not window.transcript:
            # Only late text is imagined from the recall: a window nobody spoke in has no
            # words to stand in for (and the evaluator learnt on late text).
            recall = self._recall if window.states["text"] == "late" else None
            gap = self.runtime.config.window.utterance_gap
            continues = recall is not None and not any(
                end - max(start, recall.end) >= gap and end > recall.end
                for start, end in self._pauses
            )
            return replace(
                window,
                features={**window.features, "text": None},
                recalled=None if recall is None else recall.states,
                quality=quality_signals(0, window.end, recall, continues),
            )
        states = await self.runtime.encode_text(self.id, window.transcript)
        self._recall = Recall(states, window.end, window.transcript)
        return replace(
            window,
            features={**window.features, "text": states},
            quality=quality_signals(self._recall.words, window.end, None, False),
        )

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
            ),
            ("windows", window.end),
        )

    def _sentiment_event(self, window: Window, out: FusionOutput) -> SentimentEvent:
        """The model's reading of the window, moved by the face prior (model/face_prior.py).

        Its transcript is the text the score came from: the recalled text when the
        evaluator imagined late text from it."""
        used = {
            m: window.states[m] in USED_STATES and window.features[m] is not None
            for m in MODALITIES
        }
        faces = window.extras.get("vision")
        expression = summarize(faces) if used["vision"] and faces is not None else None
        model_score = float(out.score[0])
        confidence = min(max(float(out.confidence[0]), 0.0), 1.0)
        fused = apply_face_prior(
            model_score,
            confidence,
            text_used=used["text"],
            vision_state=window.states["vision"],
            valence=None if expression is None else expression.valence,
            config=self.runtime.config.face_prior,
        )
        score, confidence = fused or (model_score, confidence)
        reports = {}
        for j, m in enumerate(MODALITIES):
            imagined = bool(out.imagined[0, j])
            reports[m] = ModalityReport(
                state=window.states[m],
                weight=min(max(float(out.weights[0, j]), 0.0), 1.0),
                action="used" if used[m] else "imagined" if imagined else "skipped",
                gain=None if used[m] else round(float(out.gain[0, j]), 4),
                expression=expression if m == "vision" else None,
            )
        transcript, interim = window.transcript, window.interim_words
        if (
            not used["text"]
            and reports["text"].action == "imagined"
            and window.recalled is not None
        ):
            transcript, interim = (self._recall.text if self._recall is not None else ""), 0
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
                confidence=confidence,
                model_score=None if fused is None else round(model_score, 4),
            ),
            modalities=reports,
            transcript=transcript,
            interim_words=interim,
            **self.tags,
        )

    async def _emit(self, event: AnyEvent, order: tuple[str, float] | None = None) -> None:
        """Number the event (gapless per session) and hand it to the sinks in order.

        --fast merges the recogniser's and the windows' events by media time (`order`:
        lane and time), so the same input gives the same sequence on any machine. A sink
        that fails for the first time is reported to the others by a `degraded` event.
        """
        async with self._emit_lock:
            if self.realtime or order is None:
                await self._deliver(event)
            else:
                self._order.put(*order, event)
                for ready in self._order.ready():
                    await self._deliver(ready)

    async def _advance(self, lane: str, to: float) -> None:
        """A lane's events up to media time `to` are all in: held events may go out."""
        if self.realtime:
            return
        async with self._emit_lock:
            self._order.advance(lane, to)
            for ready in self._order.ready():
                await self._deliver(ready)

    async def _deliver(self, event: AnyEvent) -> None:
        failed = await self._send(event)
        if failed is not None:
            self.summary.sink_failures.extend(failed.failures)
            reason = "; ".join(f"sink {f.describe()}" for f in failed.failures)
            await self._send(self._session_event("degraded", reason))

    async def _send(self, event: AnyEvent) -> SinkFailed | None:
        event = event.model_copy(update={"seq": self._seq})
        self._seq += 1
        self.summary.events[event.type] += 1
        if self.on_event:
            self.on_event(event)
        try:
            await self.sink.send(event)
        except SinkFailed as failed:
            return failed
        return None


class MediaOrder:
    """Merges lanes of events, each in media-time order, into one order by media time.

    An event goes out once every other lane has either a held event at or after its time
    or has said (`advance`) that nothing earlier will come; ties go by lane order.
    """

    def __init__(self, lanes: tuple[str, ...]) -> None:
        self.lanes = lanes
        self._held: dict[str, deque[tuple[float, AnyEvent]]] = {lane: deque() for lane in lanes}
        self._done: dict[str, float] = dict.fromkeys(lanes, -math.inf)

    def put(self, lane: str, at: float, event: AnyEvent) -> None:
        self._held[lane].append((at, event))

    def advance(self, lane: str, to: float) -> None:
        self._done[lane] = max(self._done[lane], to)

    def ready(self) -> list[AnyEvent]:
        out: list[AnyEvent] = []
        while True:
            heads = [(q[0][0], i) for i, q in enumerate(self._held.values()) if q]
            if not heads:
                return out
            at, first = min(heads)
            lane = self.lanes[first]
            if any(
                not self._held[other] and self._done[other] < at
                for other in self.lanes
                if other != lane
            ):
                return out
            out.append(self._held[lane].popleft()[1])


async def _until(stop: asyncio.Event, frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """`frames` until it ends or `stop` is set, even while the source stalls."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            following = asyncio.ensure_future(anext(frames))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                return
            try:
                frame = following.result()
            except StopAsyncIteration:
                return
            yield frame
    finally:
        stopped.cancel()
        await frames.aclose()


def _first_error(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
