"""Shared test constants."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""Real data for development (../shared/data from the repo root); absent on some machines."""
