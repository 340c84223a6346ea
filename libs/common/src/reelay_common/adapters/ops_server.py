"""A tiny HTTP server for the workers: /healthz (alive), /readyz (dependencies answer), /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator, Mapping

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reelay_common.logging import get_logger

log = get_logger("reelay_common.adapters.ops_server")


Check = Callable[[], Awaitable[bool]]


CHECK_TIMEOUT_SECONDS = 5.0


async def _run_check(check: Check) -> bool:
    # A check that hangs or raises is a failed check, never a hung or crashed probe.
    try:
        return bool(await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS))
    except Exception:
        return False


def create_ops_app(checks: Mapping[str, Check]) -> Starlette:
    """The Starlette app behind serve_ops (also usable on its own in tests)."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[n]) for n in names))
        outcome = dict(zip(names, results, strict=True))
        ready = all(results)
        return JSONResponse({"ready": ready, "checks": outcome}, status_code=200 if ready else 503)

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
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_ops_app(checks),
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="ops-server")
    stopping = asyncio.create_task(stop.wait(), name="ops-stop")
    log.info("ops_server_started", host=host, port=bound_port)
    if on_bound is not None:
        on_bound(bound_port)
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            exc = serving.exception()
            raise RuntimeError(f"the ops server on {host}:{bound_port} stopped unexpectedly") from exc
        server.should_exit = True
        await serving
        log.info("ops_server_stopped", host=host, port=bound_port)
    finally:
        stopping.cancel()
        if not serving.done():
            server.should_exit = True
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        sock.close()
