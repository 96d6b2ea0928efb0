"""`stream-mmsa serve`: browser page, WebRTC gateway, event hub, health and metrics."""

from .app import build_app, serve

__all__ = ["build_app", "serve"]
