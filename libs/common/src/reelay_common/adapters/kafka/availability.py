"""Kafka's availability as the logs tell it: once when it goes away, once when it is back.

While a broker is down, aiokafka logs a connection error on every reconnect attempt of every client
(about every 100 ms). `KafkaAvailability` turns that stream into two facts per outage:
`kafka_unavailable` (with the first error) and `kafka_available_again` (with how long Kafka was away
and how many repeated errors were held back). As a `logging.Filter` on aiokafka's loggers it drops
their connection errors; every other aiokafka warning still gets through. Silence is no proof that
Kafka is back, so `available()` is called by whoever saw a round trip succeed (the consumer loop's
poll, commit or probe, the publisher's acknowledged send)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cache
from typing import Final

from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError

from reelay_common.logging import get_logger

log = get_logger("reelay_common.adapters.kafka")

# Errors that mean "could not reach a broker", whatever aiokafka message carries them.
_CONNECTION_ERRORS: Final = (
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
    OSError,  # ConnectionRefusedError and the other socket errors
    TimeoutError,
)
# aiokafka's messages (aiokafka/client.py) that say so without an error object among their arguments.
_CONNECTION_MESSAGES: Final = frozenset(
    {
        'Unable connect to "%s:%s": %s',
        "Unable connect to node with id %s: %s",
        "Unable to update metadata from %s",
        "Unable to request metadata from node with id %s: %r",
    }
)


def is_connection_error(record: logging.LogRecord) -> bool:
    """Whether an aiokafka log record reports a broker that could not be reached."""
    if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
        return False
    if record.msg in _CONNECTION_MESSAGES:
        return True
    args = record.args if isinstance(record.args, tuple) else ()
    if any(isinstance(arg, _CONNECTION_ERRORS) for arg in args):
        return True
    exc = record.exc_info[1] if record.exc_info else None
    return isinstance(exc, _CONNECTION_ERRORS)


class KafkaAvailability(logging.Filter):
    """Up or down, logged once per change; a filter that holds back aiokafka's repeated connection errors."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._down_since: float | None = None
        self._held_back = 0
        self._loggers: list[logging.Logger] = []

    @property
    def down(self) -> bool:
        """True between a connection error and the next round trip that succeeded."""
        return self._down_since is not None

    def unavailable(self, error: str) -> None:
        """A broker could not be reached: logged only if Kafka was up until now."""
        if self._down_since is not None:
            self._held_back += 1
            return
        self._down_since = self._clock()
        self._held_back = 0
        log.warning("kafka_unavailable", error=error[:300])

    def available(self) -> None:
        """A round trip to Kafka succeeded: logged only if Kafka was down until now."""
        if self._down_since is None:
            return
        down_for = self._clock() - self._down_since
        self._down_since = None
        log.info("kafka_available_again", down_for_s=round(down_for, 1), errors_held_back=self._held_back)

    def filter(self, record: logging.LogRecord) -> bool:
        """logging.Filter: drop aiokafka's connection errors, noting the first of an outage."""
        if is_connection_error(record):
            self.unavailable(record.getMessage())
            return False
        return True

    def install(self) -> None:
        """Filter every aiokafka logger (a logger's filters do not apply to its children's records)."""
        names = [n for n in logging.root.manager.loggerDict if n == "aiokafka" or n.startswith("aiokafka.")]
        for name in sorted(names):
            logger = logging.getLogger(name)
            if self not in logger.filters:
                logger.addFilter(self)
                self._loggers.append(logger)

    def uninstall(self) -> None:
        for logger in self._loggers:
            logger.removeFilter(self)
        self._loggers.clear()


@cache
def kafka_availability() -> KafkaAvailability:
    """The process's one tracker (aiokafka's loggers are process-wide), installed on first use."""
    tracker = KafkaAvailability()
    tracker.install()
    return tracker
