"""Adapters for frameworks that build calls around the engine; each needs its own extra."""
