"""`python -m tiktok_sandbox` / `tiktok-sandbox`: run the emulator standalone."""

from __future__ import annotations

import logging
import sys

import structlog
from aiohttp import web

from tiktok_sandbox.app import create_app
from tiktok_sandbox.settings import SandboxSettings


def _configure_logging(level: str) -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main() -> None:
    """Read SANDBOX_* settings and serve until SIGINT/SIGTERM."""
    settings = SandboxSettings()
    _configure_logging(settings.log_level)
    structlog.get_logger("tiktok_sandbox").info(
        "sandbox_starting", host=settings.host, port=settings.port, webhook_url=settings.webhook_url
    )
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)


if __name__ == "__main__":
    main()
