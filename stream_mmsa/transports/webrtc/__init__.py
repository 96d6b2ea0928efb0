"""WebRTC (aiortc): browser and conferencing tracks in, events back on a data channel."""

from .datachannel import DataChannelSink
from .gateway import GatewayError, OfferRequest, WebRTCGateway
from .source import TrackSource

__all__ = ["DataChannelSink", "GatewayError", "OfferRequest", "TrackSource", "WebRTCGateway"]
