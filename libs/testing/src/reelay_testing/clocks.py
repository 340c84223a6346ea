"""A fake clock: time that moves only when a test moves it, or when the code under test sleeps on it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from reelay_testing.roundtrip import to_millis


class FakeClock:
    """One fake time, read as the code under test wants it.

    `clock()` is a tz-aware UTC datetime (the services' `clock` dependency); `clock.time()` is
    epoch seconds (where code takes `time.time` or a monotonic clock). `sleep` / `sleep_blocking`
    stand in for asyncio.sleep / time.sleep: they record the wait and move the clock by it.
    Without `start`, the clock starts now, cut to milliseconds so what a test sets is what a
    store reads back. Offsets are kept as float seconds so epoch arithmetic stays exact.
    """

    def __init__(self, start: datetime | float | None = None) -> None:
        if start is None:
            start = to_millis(datetime.now(UTC))
        if isinstance(start, datetime):
            if start.tzinfo is None:
                raise ValueError("a FakeClock starts at a timezone-aware datetime")
            self._start = start.astimezone(UTC)
            self._epoch = start.timestamp()
        else:
            self._start = datetime.fromtimestamp(start, UTC)
            self._epoch = float(start)
        self._offset = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    @property
    def now(self) -> datetime:
        """The fake time as a UTC datetime."""
        return self._start + timedelta(seconds=self._offset)

    @now.setter
    def now(self, value: datetime) -> None:
        self._offset = (value - self._start).total_seconds()

    def time(self) -> float:
        """The fake time as epoch seconds."""
        return self._epoch + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        self._offset += seconds

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep on fake time: record, move the clock, let other tasks run once."""
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)

    def sleep_blocking(self, seconds: float) -> None:
        """time.sleep on fake time: record and move the clock."""
        self.sleeps.append(seconds)
        self.advance(seconds)
