"""/metrics counts the evaluator's decisions per modality and their imagine rate."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from stream_mmsa.events import ModalityReport, Sentiment, SentimentEvent
from stream_mmsa.server.metrics import ServerMetrics


def sentiment(text: str, vision: str) -> SentimentEvent:
    reports = {
        "text": ModalityReport(
            state="late" if text != "used" else "present", weight=0.5, action=text
        ),
        "audio": ModalityReport(state="present", weight=0.5),
        "vision": ModalityReport(
            state="missing" if vision != "used" else "present", weight=0.0, action=vision
        ),
    }
    return SentimentEvent(
        session="s",
        seq=1,
        window={"start": 0.0, "end": 4.0},
        latency_ms=12.0,
        sentiment=Sentiment(score=0.5, label="positive", confidence=0.6),
        modalities=reports,
    )


def test_imagine_rate_per_modality() -> None:
    metrics = ServerMetrics()
    events = [
        sentiment("imagined", "skipped"),
        sentiment("imagined", "skipped"),
        sentiment("skipped", "imagined"),
        sentiment("used", "skipped"),
    ]
    for event in events:
        asyncio.run(metrics.send(event))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    rate = "stream_mmsa_imagine_rate"
    assert samples[(rate, (("modality", "text"),))] == 2 / 3
    assert samples[(rate, (("modality", "vision"),))] == 1 / 4
    assert (rate, (("modality", "audio"),)) not in samples
    decisions = "stream_mmsa_missing_modality_decisions_total"
    assert samples[(decisions, (("action", "skipped"), ("modality", "vision")))] == 3
