"""`python -m reelay_status_poller`: consume publish events and poll TikTok until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError
from reelay_common.logging import configure_logging, get_logger

from reelay_status_poller.bootstrap import run
from reelay_status_poller.settings import PollerSettings


async def _serve(settings: PollerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # First signal: stop taking work, finish in-flight polls and records, commit, exit.
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    """Read settings from the environment, configure logging and run until SIGTERM/SIGINT."""
    try:
        settings = PollerSettings()
    except ValidationError as exc:
        print(f"reelay-status-poller: invalid settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(settings.log_level, settings.log_format)
    log = get_logger("reelay_status_poller")
    log.info("status_poller_starting", ops_host=settings.ops_host, ops_port=settings.ops_port)
    try:
        asyncio.run(_serve(settings))
    except Exception:
        log.exception("status_poller_crashed")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
