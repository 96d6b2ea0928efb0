"""Real-time multimodal sentiment: `Engine().analyze(source)` yields typed events.

The public names load on first use: `import stream_mmsa`, which every import of a
submodule runs first, stays light instead of pulling in torch (seconds).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `X as X`: re-exported, for type checkers
    from .api import Engine as Engine
    from .config import EngineConfig as EngineConfig
    from .events import AnyEvent as AnyEvent
    from .events import SentimentEvent as SentimentEvent
    from .events import SessionEvent as SessionEvent
    from .events import StatusEvent as StatusEvent
    from .events import TranscriptEvent as TranscriptEvent
    from .events import parse_event as parse_event
    from .media.sources.base import Source as Source
    from .media.sources.base import SourceError as SourceError
    from .media.sources.file import FileSource as FileSource
    from .media.sources.push import PushSource as PushSource

_EXPORTS = {
    "Engine": ".api",
    "EngineConfig": ".config",
    "AnyEvent": ".events",
    "SentimentEvent": ".events",
    "SessionEvent": ".events",
    "StatusEvent": ".events",
    "TranscriptEvent": ".events",
    "parse_event": ".events",
    "Source": ".media.sources.base",
    "SourceError": ".media.sources.base",
    "FileSource": ".media.sources.file",
    "PushSource": ".media.sources.push",
}
__all__ = ["__version__", *_EXPORTS]


def _version() -> str:
    """The installed distribution's version; in a bare checkout, pyproject.toml's."""
    try:
        return version("stream_mmsa")
    except PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]


__version__ = _version()


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stream_mmsa' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
