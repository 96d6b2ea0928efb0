"""One aiohttp application: the page, /page.json, /offer, /events, /healthz and /metrics.

Access: /page.json, /offer and /events need the token (`Authorization: Bearer …` or
`?token=`), and a browser calling them must come from the server's own origin or the
allow-list. The page itself is public (it holds no secret: it reads the token from its
own URL).
Every error is an HTTP status with a JSON body {"error": code, "message": text}.
"""

from __future__ import annotations

import asyncio
import faulthandler
import hmac
import logging
import os
import secrets
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from ..config import Config, ServerConfig
from ..engine import Runtime
from ..events import NEUTRAL_BAND
from ..sinks.eventlog import EventLog
from ..sinks.websocket import WebSocketHub
from ..transports.webrtc import GatewayError, OfferRequest, WebRTCGateway
from .metrics import ServerMetrics

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PROTECTED = ("/page.json", "/offer", "/events")
TOKEN_ENV = "STREAM_MMSA_TOKEN"

GATEWAY = web.AppKey("gateway", WebRTCGateway)
HUB = web.AppKey("hub", WebSocketHub)
METRICS = web.AppKey("metrics", ServerMetrics)
PAGE = web.AppKey("page", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": code, "message": message}, status=status, headers=headers or None
    )


def resolve_token(config: ServerConfig) -> tuple[str, bool]:
    """The configured token, else $STREAM_MMSA_TOKEN, else a fresh random one (generated=True)."""
    token = config.token or os.environ.get(TOKEN_ENV)
    if token:
        return token, False
    return secrets.token_urlsafe(24), True


def _presented_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.query.get("token")


def _own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _access(token: str, allowed_origins: list[str]) -> Callable:
    allowed = {origin.rstrip("/") for origin in allowed_origins}

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in PROTECTED:
            return await handler(request)
        origin = request.headers.get("Origin")
        cross = origin is not None and origin != _own_origin(request)
        if cross and origin not in allowed:
            return error(403, "origin_not_allowed", f"origin {origin} is not allowed here")
        if request.method != "OPTIONS":  # browsers send no credentials in a CORS preflight
            presented = _presented_token(request)
            if presented is None or not hmac.compare_digest(presented.encode(), token.encode()):
                return error(
                    401,
                    "unauthorized",
                    "a valid token is required (Authorization: Bearer … or ?token=…)",
                    **{"WWW-Authenticate": "Bearer"},
                )
        response = await handler(request)
        if cross and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return access


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413 …) as JSON like ours."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error(exc.status, code, exc.text or exc.reason)


async def _page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _page_config(request: web.Request) -> web.Response:
    """What the page needs from the server's config: behind the token, as TURN credentials
    are only for people who may start a session."""
    return web.json_response(request.app[PAGE])


async def _offer(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # bad JSON or UTF-8, an int over 4300 digits, deep nesting
        return error(400, "bad_json", "the body must be a JSON object {sdp, type, room?, …}")
    try:
        offer = OfferRequest.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return error(400, "bad_offer", problems)
    try:
        answer = await request.app[GATEWAY].accept(offer)
    except GatewayError as exc:
        headers = {"Retry-After": "5"} if exc.status == 503 else {}
        return error(exc.status, exc.code, exc.message, **headers)
    return web.json_response(answer)


async def _preflight(request: web.Request) -> web.Response:
    """CORS preflight for /offer; the access middleware has already checked the origin."""
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "POST, GET",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
        },
    )


async def _healthz(request: web.Request) -> web.Response:
    gateway, hub = request.app[GATEWAY], request.app[HUB]
    return web.json_response(
        {
            "status": "ok",
            "sessions": len(gateway.peers),
            "max_sessions": gateway.max_sessions,
            "websocket_clients": hub.clients,
            "inference_queue": gateway.runtime.worker.metrics.queue_depth,
        }
    )


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def build_app(runtime: Runtime, config: ServerConfig, token: str) -> web.Application:
    """The server's app around a started Runtime; closing the app ends every session."""
    event_log = EventLog(config.db)
    metrics = ServerMetrics()
    hub = WebSocketHub(
        max_queue=config.max_queue, max_message=config.max_message_bytes, log=event_log
    )
    gateway = WebRTCGateway(
        runtime,
        [event_log, hub, metrics],
        max_sessions=config.max_sessions,
        idle_timeout=config.idle_timeout,
        max_message_bytes=config.max_message_bytes,
        ice_servers=config.ice_servers,
        shutdown_grace=config.shutdown_grace,
    )
    metrics.watch(gateway, hub, {"inference": runtime.worker, "text": runtime.text_worker})
    app = web.Application(
        client_max_size=config.max_offer_bytes,
        middlewares=[json_errors, _access(token, config.allowed_origins)],
    )
    app[GATEWAY], app[HUB], app[METRICS] = gateway, hub, metrics
    app[PAGE] = {
        "ice_servers": [server.model_dump(exclude_none=True) for server in config.ice_servers],
        "neutral_band": NEUTRAL_BAND,
    }
    app.router.add_get("/", _page)
    app.router.add_get("/page.json", _page_config)
    app.router.add_static("/static", STATIC)
    app.router.add_post("/offer", _offer)
    app.router.add_route("OPTIONS", "/offer", _preflight)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)

    async def end_sessions(app: web.Application) -> None:
        await gateway.close()

    app.on_shutdown.append(end_sessions)  # before the hub closes its clients
    hub.add_routes(app)

    async def close_log(app: web.Application) -> None:
        await event_log.close()

    app.on_cleanup.append(close_log)
    return app


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """HTTPS from the configured PEM pair, or None for plain HTTP; raises on a bad pair."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def serve(config: Config, token: str, announce: Callable[[str], None] = print) -> None:
    """Run until SIGINT/SIGTERM; `announce` gets the page's URL once it is listening.
    SIGUSR1 prints every thread's stack to stderr: what a server that hangs is doing."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    tls = tls_context(config.server)  # a bad certificate fails before the models load
    async with Runtime(config.engine) as runtime:
        app = build_app(runtime, config.server, token)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, config.server.host, config.server.port, ssl_context=tls)
        await site.start()
        host, port = runner.addresses[0][:2]
        announce(f"{'https' if tls else 'http'}://{host}:{port}/?token={token}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
