"""Events round-trip through JSON and match the published JSON Schema, which matches the models."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from stream_mmsa.events import (
    SCHEMA_VERSION,
    Expression,
    ModalityReport,
    Sentiment,
    SentimentEvent,
    SessionEvent,
    StatusEvent,
    TranscriptEvent,
    Window,
    Word,
    json_schema,
    parse_event,
    published_schema,
    sentiment_label,
)

EVENTS = [
    SentimentEvent(
        session="s1",
        seq=42,
        window=Window(start=12.0, end=16.0),
        latency_ms=84.1,
        sentiment=Sentiment(score=1.4, label=sentiment_label(1.4), confidence=0.72),
        modalities={
            "text": ModalityReport(state="late", action="imagined", gain=0.21, weight=0.31),
            "audio": ModalityReport(state="present", weight=0.44),
            "vision": ModalityReport(state="missing", action="skipped", gain=-0.05, weight=0.0),
        },
        transcript="i really loved",
    ),
    SentimentEvent(
        session="s2",
        seq=0,
        room="lobby",
        participant="alice",
        window=Window(start=0.0, end=0.5),
        latency_ms=3.0,
        sentiment=Sentiment(score=-3.0, label="negative", confidence=0.0),
        modalities={"audio": ModalityReport(state="partial", weight=1.0)},
    ),
    SentimentEvent(  # a silent, smiling face: the score follows the face prior
        session="s1",
        seq=48,
        window=Window(start=16.5, end=17.5),
        latency_ms=12.5,
        sentiment=Sentiment(score=1.7124, label="positive", confidence=0.4717, model_score=-0.3521),
        modalities={
            "text": ModalityReport(state="missing", action="skipped", gain=-0.01, weight=0.0),
            "audio": ModalityReport(state="missing", action="imagined", gain=0.02, weight=0.1),
            "vision": ModalityReport(
                state="present",
                weight=0.9,
                expression=Expression(
                    label="happy",
                    probs={
                        "angry": 0.0,
                        "disgust": 0.0,
                        "fear": 0.0,
                        "happy": 0.9973,
                        "sad": 0.0,
                        "surprise": 0.0018,
                        "neutral": 0.0009,
                    },
                    valence=0.9973,
                ),
            ),
        },
    ),
    TranscriptEvent(
        session="s1",
        seq=43,
        final=True,
        text="i really loved it",
        words=[
            Word(word="i", start=12.1, end=12.2, prob=0.98),
            Word(word="really", start=12.2, end=12.6, prob=0.91),
        ],
    ),
    TranscriptEvent(session="s1", seq=44, final=False, text="", words=[]),
    StatusEvent(
        session="s1", seq=45, modality="vision", state="missing", since=31.5, reason="no face"
    ),
    SessionEvent(
        session="s1",
        seq=46,
        state="degraded",
        reason="sink EventLog(e.sqlite) failed (disk full); 3 events lost",
    ),
    SessionEvent(session="s1", seq=47, state="ended", reason="stopped: SIGTERM", counts={"x": 2.0}),
]


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = published_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_published_schema_file_equals_models() -> None:
    # If this fails: python scripts/write_schema.py, and commit the file.
    assert published_schema() == json_schema()


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{e.type}-{e.seq}")
def test_event_round_trips_and_validates(event, validator) -> None:
    text = event.to_json()
    data = json.loads(text)
    validator.validate(data)
    assert data["schema"] == SCHEMA_VERSION
    assert data["type"] == event.type
    assert "\n" not in text
    parsed = parse_event(text)
    assert type(parsed) is type(event)
    assert parsed == event
    assert parse_event(data) == event
    assert parsed.to_json() == text


def test_every_event_type_is_covered() -> None:
    published = {
        d["properties"]["type"]["const"]
        for d in json_schema()["$defs"].values()
        if "type" in d.get("properties", {})
    }
    assert published == {e.type for e in EVENTS}


def _mutated(change, event: int = 0) -> dict:
    data = json.loads(EVENTS[event].to_json())
    change(data)
    return data


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("type"),
        lambda d: d.update(schema="stream-mmsa/2"),
        lambda d: d.update(seq=-1),
        lambda d: d.update(extra=1),
        lambda d: d["sentiment"].update(score=3.5),
        lambda d: d["sentiment"].update(label="happy"),
        lambda d: d["modalities"].update(smell={"state": "present", "weight": 0.1}),
        lambda d: d["modalities"]["audio"].update(state="gone"),
        lambda d: d.update(type="status"),
    ],
    ids=[
        "no-type",
        "other-version",
        "negative-seq",
        "extra-field",
        "score-range",
        "label",
        "modality",
        "state",
        "wrong-type",
    ],
)
def test_schema_and_parser_reject_the_same_events(change, validator) -> None:
    data = _mutated(change)
    assert not validator.is_valid(data)
    with pytest.raises(ValidationError):
        parse_event(data)


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.update(label="joy"),
        lambda e: e["probs"].update(joy=0.1),
        lambda e: e["probs"].update(happy=1.2),
        lambda e: e.update(valence=-1.5),
        lambda e: e.pop("probs"),
    ],
    ids=["label", "class", "probability", "valence", "no-probs"],
)
def test_expression_is_checked(change, validator) -> None:
    data = _mutated(lambda d: change(d["modalities"]["vision"]["expression"]), event=2)
    assert not validator.is_valid(data)
    with pytest.raises(ValidationError):
        parse_event(data)


def test_sentiment_label_band() -> None:
    assert sentiment_label(0.49) == "neutral"
    assert sentiment_label(0.5) == "positive"
    assert sentiment_label(-0.5) == "negative"
