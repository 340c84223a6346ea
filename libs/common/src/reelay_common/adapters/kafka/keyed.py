"""Key-ordered concurrency inside one Kafka partition, and the commit rule that keeps it safe.

One partition carries many accounts (the key of `reelay.upload.requested` is `account_id`). Worked one
record at a time, an account that waits (out its rate-limit window, a retry backoff) holds up every
other account behind it on the partition. `KeyedPartition` runs records of different keys at once, up
to a limit, and records of one key strictly one after the other, in offset order.

The commit rule (`OffsetLedger`): the offset committed for a partition is always one past the longest
run of finished records from the start of what this consumer holds. Records finished out of order
wait for the ones before them; a record that fails, retries or is abandoned holds the commit where it
is. So a crash, a stop or a rebalance redelivers exactly the records that were not finished (and
perhaps some finished after them: handlers are idempotent, docs/architecture.md "Idempotency").

No aiokafka here: the consumer loop hands in how to process a record and how to commit an offset.
Why not a library: docs/design.md, "Key-ordered consumption"."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")


class OffsetLedger:
    """The offsets of one partition held by a consumer, in the order fetched, and which are finished."""

    def __init__(self) -> None:
        self._held: deque[int] = deque()
        self._finished: set[int] = set()
        self._next: int | None = None  # one past the last offset of the finished prefix

    def add(self, offset: int) -> None:
        """A fetched record; offsets arrive in increasing order."""
        if self._held and offset <= self._held[-1]:
            raise ValueError(f"offset {offset} is not after {self._held[-1]}")
        self._held.append(offset)

    def finish(self, offset: int) -> None:
        """The record at `offset` reached its outcome (handled, skipped, dead-lettered)."""
        if offset not in self._held or offset in self._finished:
            raise ValueError(f"offset {offset} is not held unfinished")
        self._finished.add(offset)
        while self._held and self._held[0] in self._finished:
            done = self._held.popleft()
            self._finished.discard(done)
            self._next = done + 1

    def committable(self) -> int | None:
        """The offset to commit (Kafka's "next to read"): never past an unfinished record; None
        while nothing from the start is finished."""
        return self._next

    def first_unfinished(self) -> int | None:
        """The lowest held offset not finished yet (where a redelivery would start), if any."""
        return self._held[0] if self._held else None

    def __len__(self) -> int:
        """Records held and not released by the commit rule (unfinished, or finished after a gap)."""
        return len(self._held)


class Abandoned(Exception):
    """Raised by `process` or `commit`: leave this record (and the partition) as they are; another
    consumer, or this one after a restart, will redo what is unfinished."""


@dataclass
class _Slot(Generic[R]):
    record: R
    offset: int


class KeyedPartition(Generic[R]):
    """Runs the records of one partition: one at a time per key, up to `limit` at once; commits the
    finished prefix after each record (commits are serialised, so they never go backwards)."""

    def __init__(
        self,
        *,
        name: str,
        limit: int,
        offset_of: Callable[[R], int],
        key_of: Callable[[R], Hashable],
        process: Callable[[R], Awaitable[bool]],
        commit: Callable[[int], Awaitable[None]],
        on_crash: Callable[[BaseException], None],
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._name = name
        self._limit = limit
        self._offset_of = offset_of
        self._key_of = key_of
        self._process = process
        self._commit = commit
        self._on_crash = on_crash
        self._on_progress = on_progress
        self.ledger = OffsetLedger()
        self._waiting: dict[Hashable, deque[_Slot[R]]] = {}
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._committed: int | None = None
        self._commit_lock = asyncio.Lock()
        self._starting = True

    # ------------------------------------------------------------------------------------- public

    def add(self, records: Iterable[R]) -> None:
        """Take fetched records (in offset order) and start what the limit and key order allow."""
        for record in records:
            offset = self._offset_of(record)
            self.ledger.add(offset)
            self._waiting.setdefault(self._key_of(record), deque()).append(_Slot(record, offset))
        self._fill()

    @property
    def held(self) -> int:
        """Records held and not yet released by the commit rule."""
        return len(self.ledger)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def committed(self) -> int | None:
        """The last offset committed by this consumer for the partition, if any."""
        return self._committed

    def stop_starting(self) -> None:
        """Start no more records (shutdown, or the partition was lost); in-flight ones go on."""
        self._starting = False

    def tasks(self) -> list[asyncio.Task[None]]:
        """The records in flight, one task each."""
        return [t for t in self._running.values() if not t.done()]

    async def cancel(self, *, within: float = 10.0) -> int:
        """Stop starting, cancel what is in flight and wait for it (bounded: a handler that swallows
        cancellation must not block a rebalance forever). Returns how many were cancelled."""
        self.stop_starting()
        tasks = [t for t in self._running.values() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=within)
        return len(tasks)

    def uncommitted_finished(self) -> int | None:
        """The committable offset when it is past the last commit (a final commit is owed), else None."""
        target = self.ledger.committable()
        if target is None or (self._committed is not None and target <= self._committed):
            return None
        return target

    def mark_committed(self, offset: int) -> None:
        """Record a commit made outside `_commit_finished` (the loop's final commit on revoke)."""
        if self._committed is None or offset > self._committed:
            self._committed = offset

    # ------------------------------------------------------------------------------------ workers

    def _fill(self) -> None:
        """Start the waiting records whose key is idle, lowest offset first, up to the limit."""
        while self._starting and len(self._running) < self._limit:
            ready = [(q[0].offset, key) for key, q in self._waiting.items() if key not in self._running]
            if not ready:
                return
            _, key = min(ready, key=lambda pair: pair[0])
            queue = self._waiting[key]
            slot = queue.popleft()
            if not queue:
                del self._waiting[key]
            task = asyncio.create_task(self._run(key, slot), name=f"kafka-{self._name}-{slot.offset}")
            self._running[key] = task
            task.add_done_callback(self._task_done)

    async def _run(self, key: Hashable, slot: _Slot[R]) -> None:
        try:
            finished = await self._process(slot.record)
        except Abandoned:
            finished = False
        finally:
            # No await between here and _fill: the key is free again and its next record may start.
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]
        if not finished:
            # Stopping, or the partition moved: this record stays unfinished and holds the commit.
            self.stop_starting()
            return
        self.ledger.finish(slot.offset)
        self._fill()
        self._on_progress()
        try:
            await self._commit_finished()
        except Abandoned:
            self.stop_starting()

    async def _commit_finished(self) -> None:
        async with self._commit_lock:
            target = self.uncommitted_finished()
            if target is None:
                return
            await self._commit(target)
            self.mark_committed(target)
        self._on_progress()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A bug in the loop itself, not a handler error (those are outcomes): surface it.
            self.stop_starting()
            with contextlib.suppress(Exception):
                self._on_crash(exc)
