"""`python -m reelay_ingest`: serve the ingest API with uvicorn (SIGTERM drains in-flight requests)."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError
from reelay_common.logging import configure_logging, get_logger

from reelay_ingest.app import create_app
from reelay_ingest.settings import IngestSettings


def main() -> None:
    """Read settings from the environment, configure logging and serve until SIGTERM/SIGINT."""
    try:
        settings = IngestSettings()
    except ValidationError as exc:
        print(f"reelay-ingest: invalid settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(settings.log_level, settings.log_format)
    log = get_logger("reelay_ingest")
    log.info("ingest_starting", host=settings.host, port=settings.port)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # Our own logging: uvicorn must not install its handlers; each request is logged by
        # ObserveRequests as one structured line, so uvicorn's access log is off.
        log_config=None,
        access_log=False,
        proxy_headers=True,
        # On SIGTERM uvicorn stops accepting, lets in-flight requests (an upload streaming into
        # GridFS, a publish awaiting Kafka's ack) finish for this long, then runs the lifespan's
        # shutdown, which closes Kafka, Mongo and the TikTok client.
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        lifespan="on",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
