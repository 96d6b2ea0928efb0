"""Where events go: one module per sink, all with the same two-method `Sink` interface.

Concrete sinks are imported from their modules (sinks.jsonl, sinks.eventlog,
sinks.websocket) so that using one never imports another's dependencies.
"""

from .base import AnyEvent, Sink
from .group import SinkGroup

__all__ = ["AnyEvent", "Sink", "SinkGroup"]
