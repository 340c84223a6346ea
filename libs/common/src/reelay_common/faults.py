"""Fault injection for the project's own crash tests (docs/architecture.md, promise 9).

`REELAY_CRASH_BEFORE_SEND=<marker file>` makes a process SIGKILL itself right after a Mongo write
that owes Kafka a message, before that message is sent: the moment a crash could lose an
announcement if the outbox did not keep it. It fires once per marker (the file is created first),
so the restarted process runs normally. Unset in every deployment; a no-op then.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from reelay_common.logging import get_logger

log = get_logger("reelay_common.faults")


def crash_once(marker: Path | None) -> Callable[[], None] | None:
    """A callback that kills this process the first time it runs for `marker`; None without one."""
    if marker is None:
        return None

    def crash() -> None:
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return  # fired already: this is the restarted process
        log.warning("fault_injected_crash", marker=str(marker))
        os.kill(os.getpid(), signal.SIGKILL)

    return crash
