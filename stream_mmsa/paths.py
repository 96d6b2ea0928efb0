"""Where models and caches live, and whether a hub may be asked: one rule for every model."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}

SAMPLE = Path(__file__).resolve().parent / "samples" / "sample.mp4"
"""The bundled clip (package data, so `demo` and `bench` work from a wheel too); its
timeline (sentences, silence, no-face stretch) is sample.json beside it."""


def cache_root() -> Path:
    """The user cache directory: `$STREAM_MMSA_CACHE`, else `~/.cache/stream_mmsa`."""
    return Path(os.environ.get("STREAM_MMSA_CACHE", "~/.cache/stream_mmsa")).expanduser()


def hub_offline() -> bool:
    """True when the Hugging Face hub is marked offline, so no download may be tried."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def packaged_file(package: str, relative: str) -> Path | None:
    """The file `relative` inside an installed package, or None. Located without importing
    the package: a weights carrier's own imports (TensorFlow for one) are not ours."""
    spec = importlib.util.find_spec(package)
    for root in (spec and spec.submodule_search_locations) or []:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None
