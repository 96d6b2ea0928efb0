"""Events the engine emits, their JSON form and their published JSON Schema.

Every event shares one envelope (type, schema, session, seq, emitted_at) so a
client can detect loss from `seq` alone and resume from the event log.
`score` is on the CMU-MOSI scale (-3..3).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SchemaVersion = Literal["stream-mmsa/1"]
SCHEMA_VERSION: str = get_args(SchemaVersion)[0]
NEUTRAL_BAND = 0.5
"""|score| below this is labelled neutral: MOSI annotators' 'neutral' sits at 0 ± 0.5."""

ModalityName = Literal["text", "audio", "vision"]
ModalityState = Literal["present", "partial", "late", "missing"]
ExpressionLabel = Literal["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
"""FER2013's classes in the dataset's order, which the expression classifier's outputs follow."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sentiment_label(score: float) -> Literal["positive", "neutral", "negative"]:
    if score >= NEUTRAL_BAND:
        return "positive"
    if score <= -NEUTRAL_BAND:
        return "negative"
    return "neutral"


def _require_type(schema: dict[str, Any]) -> None:
    """`type` is the discriminator parse_event needs, so the published schema requires it too."""
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")


class _Event(BaseModel):
    # The version is a constant: a reader of stream-mmsa/1 must refuse any other version.
    model_config = ConfigDict(extra="forbid", json_schema_extra=_require_type)

    schema_: SchemaVersion = Field(SCHEMA_VERSION, alias="schema")
    session: str
    seq: int = Field(ge=0)
    emitted_at: str = Field(default_factory=utc_now)
    room: str | None = None
    participant: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: float
    end: float


class Sentiment(BaseModel):
    """`score` is what the engine says; `model_score`, when present, is the fusion model's own
    score before the face prior (model/face_prior.py) moved it."""

    model_config = ConfigDict(extra="forbid")
    score: float = Field(ge=-3, le=3)
    label: Literal["positive", "neutral", "negative"]
    confidence: float = Field(ge=0, le=1)
    model_score: float | None = Field(None, ge=-3, le=3)


class Expression(BaseModel):
    """The face's expression over a window: FER2013 probabilities averaged over its face
    frames, their top class, and the valence summary (features/expression.py) in [-1, 1]."""

    model_config = ConfigDict(extra="forbid")
    label: ExpressionLabel
    probs: dict[ExpressionLabel, Annotated[float, Field(ge=0, le=1)]]
    valence: float = Field(ge=-1, le=1)


class ModalityReport(BaseModel):
    """How one modality took part in a window: its state and, when absent, the evaluator's call.
    Vision also says the face's expression when a face was used."""

    model_config = ConfigDict(extra="forbid")
    state: ModalityState
    weight: float = Field(ge=0, le=1)
    action: Literal["used", "imagined", "skipped"] = "used"
    gain: float | None = None
    expression: Expression | None = None


class SentimentEvent(_Event):
    type: Literal["sentiment"] = "sentiment"
    window: Window
    latency_ms: float
    sentiment: Sentiment
    modalities: dict[ModalityName, ModalityReport]
    transcript: str = ""
    interim_words: int = Field(
        0,
        ge=0,
        description="how many of the transcript's last words are interim: heard, not yet "
        "final (live only; the recogniser may still change them)",
    )


class Word(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str
    start: float
    end: float
    prob: float = Field(ge=0, le=1)


class TranscriptEvent(_Event):
    type: Literal["transcript"] = "transcript"
    final: bool
    text: str
    words: list[Word]


class StatusEvent(_Event):
    type: Literal["status"] = "status"
    modality: ModalityName
    state: ModalityState
    since: float
    reason: str = ""


SessionState = Literal["degraded", "failed", "ended"]


class SessionEvent(_Event):
    """Something about the session itself rather than one modality.

    degraded: work was lost but the session goes on (a sink failed, frames dropped,
      undecodable packets skipped); `counts` says how much.
    failed: a part of the pipeline raised; the session ends after this event.
    ended: the last event of every session, with why (source ended, stopped by signal, ...).
    """

    type: Literal["session"] = "session"
    state: SessionState
    reason: str
    counts: dict[str, float] = Field(default_factory=dict)


AnyEvent = SentimentEvent | TranscriptEvent | StatusEvent | SessionEvent
Event = Annotated[AnyEvent, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: str | bytes | dict) -> AnyEvent:
    """Parse and validate one event from JSON text or a dict."""
    if isinstance(data, str | bytes):
        return EVENT_ADAPTER.validate_json(data)
    return EVENT_ADAPTER.validate_python(data)


def json_schema() -> dict:
    """The JSON Schema of every event type, as published in stream_mmsa/schemas/."""
    schema = EVENT_ADAPTER.json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://stream-mmsa.invalid/schemas/event-1.json"
    schema["title"] = "stream-mmsa event (schema stream-mmsa/1)"
    return schema


def published_schema() -> dict:
    """The schema file shipped with the package (kept equal to json_schema() by a test)."""
    text = resources.files("stream_mmsa").joinpath("schemas/event.schema.json").read_text()
    return json.loads(text)
