"""Loaded by every service process of bench/pipeline.py --profile (it is put first on PYTHONPATH):
counts each Mongo command the process sends, and its round-trip time, by command name, and writes
the totals to $REELAY_BENCH_PROFILE_DIR/<pid>.json every second (a SIGTERM'd service may skip
atexit). Profiling only: nothing of this runs in a service started any other way."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

_DIR = os.environ.get("REELAY_BENCH_PROFILE_DIR")

if _DIR:
    from pymongo import monitoring

    _counts: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    _lock = threading.Lock()

    class _Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            pass

        def _done(self, name: str, micros: int) -> None:
            with _lock:
                row = _counts[name]
                row[0] += 1
                row[1] += micros / 1e6

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            self._done(event.command_name, event.duration_micros)

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            self._done(f"{event.command_name}(failed)", event.duration_micros)

    monitoring.register(_Listener())
    _out = Path(_DIR) / f"{os.getpid()}.json"

    def _dump() -> None:
        while True:
            time.sleep(1.0)
            with _lock:
                data = {"argv": sys.argv, "commands": {k: list(v) for k, v in _counts.items()}}
            tmp = _out.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(_out)

    threading.Thread(target=_dump, daemon=True, name="bench-mongo-profile").start()
