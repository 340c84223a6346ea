"""`python -m reelay_uploader`: run the uploader until SIGTERM/SIGINT, then shut down gracefully."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError
from reelay_common.logging import configure_logging, get_logger

from reelay_uploader.bootstrap import run
from reelay_uploader.settings import UploaderSettings

log = get_logger("reelay_uploader")


async def _serve(settings: UploaderSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(signame: str) -> None:
        if stop.is_set():
            return
        # In-flight uploads get UPLOADER_SHUTDOWN_GRACE_SECONDS, then are handed back uncommitted.
        log.info("shutdown_requested", signal=signame)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)
    await run(settings, stop)


def main() -> None:
    """Console entry point (`reelay-uploader`)."""
    try:
        settings = UploaderSettings()
    except ValidationError as exc:
        print(f"reelay-uploader: invalid settings:\n{exc}", file=sys.stderr)  # before logging exists
        sys.exit(2)
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
