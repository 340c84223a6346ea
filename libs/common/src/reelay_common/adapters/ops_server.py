"""Serving ASGI apps under a service's supervisor: the workers' ops app (/healthz, /readyz,
/metrics) and, for ingest, its API. Bound here, shut down through uvicorn, signals left alone."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator, Mapping

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from reelay_common.logging import get_logger
from reelay_common.readiness import Check, check_readiness

log = get_logger("reelay_common.adapters.ops_server")

# On a hard stop (the serving task cancelled) uvicorn still gets this long to close its listener.
HARD_STOP_SECONDS = 5.0


def create_ops_app(checks: Mapping[str, Check]) -> Starlette:
    """The Starlette app behind serve_ops (also usable on its own in tests)."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        outcome = await check_readiness(checks)
        return JSONResponse(
            {"ready": outcome.ready, "checks": outcome.checks}, status_code=200 if outcome.ready else 503
        )

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The service's composition root owns SIGTERM/SIGINT; uvicorn must not take them over.
        yield


def _bind(host: str, port: int) -> socket.socket:
    # Bound here, not by uvicorn: uvicorn calls sys.exit(1) on a bind error, which would take the
    # whole event loop down instead of raising in the caller.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"the ops server cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


async def serve_ops(
    *,
    host: str,
    port: int,
    checks: Mapping[str, Check],
    stop: asyncio.Event,
    on_bound: Callable[[int], None] | None = None,
) -> None:
    """Serve /healthz, /readyz and /metrics on host:port until `stop` is set (port 0: any free port)."""
    await serve_app(create_ops_app(checks), host=host, port=port, stop=stop, on_bound=on_bound, name="ops")


async def serve_app(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    on_bound: Callable[[int], None] | None = None,
    name: str = "http",
    shutdown_grace_seconds: float | None = None,
    proxy_headers: bool = False,
) -> None:
    """Serve `app` on host:port until `stop` is set, then let in-flight requests finish for
    `shutdown_grace_seconds` (None: as long as they take). RuntimeError if it cannot listen."""
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        # Our own logging: uvicorn must not install its handlers, nor log each request.
        log_config=None,
        access_log=False,
        lifespan="off",
        proxy_headers=proxy_headers,
        timeout_graceful_shutdown=None if shutdown_grace_seconds is None else int(shutdown_grace_seconds),
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"{name}-server")
    stopping = asyncio.create_task(stop.wait(), name=f"{name}-stop")
    log.info("http_server_started", server=name, host=host, port=bound_port)
    if on_bound is not None:
        on_bound(bound_port)
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            exc = serving.exception()
            raise RuntimeError(f"the {name} server on {host}:{bound_port} stopped unexpectedly") from exc
        server.should_exit = True
        await serving
        log.info("http_server_stopped", server=name, host=host, port=bound_port)
    finally:
        stopping.cancel()
        if not serving.done():
            # Cancelled (a hard stop): no grace for requests, but uvicorn must still close its
            # listener, or the socket stays registered with the event loop after it is closed.
            server.should_exit = server.force_exit = True
            await asyncio.wait({serving}, timeout=HARD_STOP_SECONDS)
            if not serving.done():
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
        sock.close()
