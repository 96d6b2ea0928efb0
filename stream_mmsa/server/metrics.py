"""Prometheus metrics for `/metrics`: counted from events, sampled from live state.

Event counts and latencies are observed as events pass (a sink like any other);
sessions, queue depths and dropped frames are read from the gateway, hub and inference
worker when Prometheus scrapes, so they cost nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..events import SentimentEvent
from ..sinks.base import AnyEvent, Sink

if TYPE_CHECKING:
    from ..inference import MicroBatcher
    from ..sinks.websocket import WebSocketHub
    from ..transports.webrtc import WebRTCGateway

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
"""Seconds; dense around the 150 ms budget of DESIGN.md."""


class ServerMetrics(Sink):
    """One registry per server, so tests and embedded servers never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "stream_mmsa_events", "Events emitted, by type", ["type"], registry=self.registry
        )
        self.latency = Histogram(
            "stream_mmsa_event_latency_seconds",
            "Sentiment event delay after its window's end",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "stream_mmsa_missing_modality_decisions",
            "Evaluator decisions on missing or late modalities, by modality and action",
            ["modality", "action"],
            registry=self.registry,
        )
        self.imagine_rate = Gauge(
            "stream_mmsa_imagine_rate",
            "Share of a modality's missing windows the evaluator imagined (since start)",
            ["modality"],
            registry=self.registry,
        )
        self._decided: dict[str, dict[str, int]] = {}

    def watch(
        self, gateway: WebRTCGateway, hub: WebSocketHub, workers: dict[str, MicroBatcher]
    ) -> None:
        """Sample these at scrape time; `workers` by name ("inference", "text")."""
        self.registry.register(_LiveState(gateway, hub, workers))

    async def send(self, event: AnyEvent) -> None:
        self.events.labels(event.type).inc()
        if isinstance(event, SentimentEvent):
            self.latency.observe(event.latency_ms / 1000)
            for modality, report in event.modalities.items():
                if report.action == "used":
                    continue
                self.decisions.labels(modality, report.action).inc()
                counts = self._decided.setdefault(modality, {"imagined": 0, "skipped": 0})
                counts[report.action] += 1
                total = counts["imagined"] + counts["skipped"]
                self.imagine_rate.labels(modality).set(counts["imagined"] / total)

    async def close(self) -> None:
        """Nothing to release: the registry lives as long as the server."""

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveState(Collector):
    def __init__(
        self, gateway: WebRTCGateway, hub: WebSocketHub, workers: dict[str, MicroBatcher]
    ) -> None:
        self.gateway, self.hub, self.workers = gateway, hub, workers

    def collect(self) -> Iterator[Metric]:
        gateway = self.gateway
        yield GaugeMetricFamily(
            "stream_mmsa_sessions", "Sessions running", value=len(gateway.peers)
        )
        yield GaugeMetricFamily(
            "stream_mmsa_sessions_limit", "Concurrent sessions allowed", value=gateway.max_sessions
        )
        outcomes = CounterMetricFamily(
            "stream_mmsa_sessions_finished", "Offers by outcome", labels=["outcome"]
        )
        for outcome in ("ended", "failed", "refused"):
            outcomes.add_metric([outcome], gateway.outcomes[outcome])
        yield outcomes
        stats = gateway.stats()
        frames = CounterMetricFamily(
            "stream_mmsa_frames_received", "Media frames received", labels=["kind"]
        )
        frames.add_metric(["audio"], stats.audio_chunks)
        frames.add_metric(["video"], stats.video_frames)
        yield frames
        dropped = CounterMetricFamily(
            "stream_mmsa_dropped_frames",
            "Frames never analysed: video replaced by a newer frame, audio over the backlog",
            labels=["kind"],
        )
        dropped.add_metric(["audio"], stats.audio_dropped)
        dropped.add_metric(["video"], stats.video_replaced)
        yield dropped
        queues = GaugeMetricFamily(
            "stream_mmsa_queue_depth", "Items waiting, by queue", labels=["queue"]
        )
        for name, worker in self.workers.items():
            queues.add_metric([name], worker.metrics.queue_depth)
        queues.add_metric(["websocket"], self.hub.queued)
        queues.add_metric(["audio"], sum(p.source.backlog for p in gateway.peers.values()))
        yield queues
        calls = CounterMetricFamily(
            "stream_mmsa_batched_calls",
            "Model calls of the shared workers (items / calls = mean batch across sessions)",
            labels=["worker"],
        )
        items = CounterMetricFamily(
            "stream_mmsa_batched_items",
            "Windows or transcripts the shared workers ran",
            labels=["worker"],
        )
        for name, worker in self.workers.items():
            calls.add_metric([name], worker.metrics.calls)
            items.add_metric([name], worker.metrics.windows)
        yield calls
        yield items
        yield GaugeMetricFamily(
            "stream_mmsa_websocket_clients", "Subscribers on /events", value=self.hub.clients
        )
        yield CounterMetricFamily(
            "stream_mmsa_websocket_dropped_clients",
            "Subscribers closed as slow consumers",
            value=self.hub.dropped,
        )
