"""Key-ordered concurrency inside one partition, and the commit rule: never commit past unfinished work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from reelay_common.adapters.kafka.keyed import Abandoned, KeyedPartition, OffsetLedger
from reelay_testing.waiting import eventually


class TestOffsetLedger:
    def test_commits_only_the_finished_prefix_when_records_finish_out_of_order(self) -> None:
        ledger = OffsetLedger()
        for offset in range(5):
            ledger.add(offset)
        ledger.finish(2)
        ledger.finish(1)
        assert ledger.committable() is None  # offset 0 is still unfinished
        ledger.finish(0)
        assert ledger.committable() == 3
        ledger.finish(4)
        assert ledger.committable() == 3  # 3 holds the commit back
        ledger.finish(3)
        assert ledger.committable() == 5
        assert len(ledger) == 0

    def test_a_record_in_the_middle_that_never_finishes_holds_the_commit_there(self) -> None:
        ledger = OffsetLedger()
        for offset in range(6):
            ledger.add(offset)
        for offset in (0, 1, 3, 4, 5):
            ledger.finish(offset)
        assert ledger.committable() == 2
        assert ledger.first_unfinished() == 2
        assert len(ledger) == 4  # 2 unfinished, 3-5 finished but not yet committable

    def test_offsets_with_gaps_commit_one_past_the_last_finished(self) -> None:
        # Compacted topics and transaction markers leave holes in the offsets.
        ledger = OffsetLedger()
        for offset in (0, 5, 9):
            ledger.add(offset)
        ledger.finish(5)
        assert ledger.committable() is None
        ledger.finish(0)
        assert ledger.committable() == 6
        assert ledger.first_unfinished() == 9

    def test_refuses_offsets_out_of_order_and_unknown_or_repeated_finishes(self) -> None:
        ledger = OffsetLedger()
        ledger.add(3)
        with pytest.raises(ValueError, match="not after"):
            ledger.add(3)
        with pytest.raises(ValueError, match="not held"):
            ledger.finish(7)
        ledger.add(4)
        ledger.finish(4)
        with pytest.raises(ValueError, match="not held"):
            ledger.finish(4)


@dataclass(frozen=True)
class Rec:
    offset: int
    key: str


@dataclass
class Harness:
    """A KeyedPartition whose records finish when the test says so."""

    limit: int = 16
    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    outcome: dict[int, bool] = field(default_factory=dict)  # False: abandoned (not finished)
    started: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)  # however they ended
    commits: list[int] = field(default_factory=list)
    crashes: list[BaseException] = field(default_factory=list)
    running_now: set[str] = field(default_factory=set)
    overlaps: list[str] = field(default_factory=list)
    peak: int = 0
    # How a commit behaves (a slow broker...); by default it is recorded at once.
    on_commit: Callable[[int], Awaitable[None]] | None = None
    work: KeyedPartition[Rec] = field(init=False)

    def __post_init__(self) -> None:
        self.work = KeyedPartition[Rec](
            name="t-0",
            limit=self.limit,
            offset_of=lambda r: r.offset,
            key_of=lambda r: r.key,
            process=self.process,
            commit=self.commit,
            on_crash=self.crashes.append,
        )

    def gate(self, offset: int) -> asyncio.Event:
        return self.gates.setdefault(offset, asyncio.Event())

    async def process(self, rec: Rec) -> bool:
        if rec.key in self.running_now:
            self.overlaps.append(rec.key)
        self.running_now.add(rec.key)
        self.started.append(rec.offset)
        self.peak = max(self.peak, len(self.running_now))
        try:
            await self.gate(rec.offset).wait()
        except asyncio.CancelledError:
            self.cancelled.append(rec.offset)
            raise
        finally:
            self.running_now.discard(rec.key)
            self.ended.append(rec.offset)
        if rec.offset == 99:
            raise KeyError("a bug in the loop")
        if not self.outcome.get(rec.offset, True):
            raise Abandoned
        self.finished.append(rec.offset)
        return True

    async def commit(self, offset: int) -> None:
        if self.on_commit is not None:
            await self.on_commit(offset)
        else:
            self.commits.append(offset)

    def add(self, *recs: tuple[int, str]) -> None:
        self.work.add(Rec(o, k) for o, k in recs)

    async def release(self, *offsets: int) -> None:
        for o in offsets:
            self.gate(o).set()
        await eventually(lambda: all(o in self.ended for o in offsets), timeout=5)
        await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class TestKeyedPartition:
    async def test_different_keys_run_at_once_and_one_key_waits_for_its_previous_record(self) -> None:
        h = Harness()
        h.add((0, "a"), (1, "b"), (2, "a"), (3, "c"))
        await settle()
        assert sorted(h.started) == [0, 1, 3]  # 2 waits for 0: same key
        await h.release(1, 3)
        assert 2 not in h.started
        await h.release(0)
        await eventually(lambda: 2 in h.started)
        await h.release(2)
        assert h.overlaps == []
        assert h.finished == [1, 3, 0, 2]

    async def test_the_limit_bounds_the_records_in_flight(self) -> None:
        h = Harness(limit=2)
        h.add(*((n, f"k{n}") for n in range(5)))
        await settle()
        assert h.started == [0, 1]
        await h.release(1)
        await eventually(lambda: h.started == [0, 1, 2])  # the lowest waiting offset goes next
        assert h.peak == 2
        await h.release(0, 2, 3, 4)
        assert h.peak == 2
        assert h.commits[-1] == 5

    async def test_out_of_order_completions_commit_only_the_contiguous_prefix(self) -> None:
        h = Harness()
        h.add((0, "a"), (1, "b"), (2, "c"), (3, "d"))
        await settle()
        await h.release(2, 3)
        assert h.commits == []  # 0 and 1 are not finished: nothing may be committed
        await h.release(1)
        assert h.commits == []
        await h.release(0)
        assert h.commits == [4]
        assert h.work.held == 0

    async def test_a_record_that_does_not_finish_holds_the_commit_and_stops_its_key(self) -> None:
        h = Harness()
        h.outcome[1] = False  # abandoned: the loop is stopping, or the partition moved
        h.add((0, "a"), (1, "b"), (2, "c"), (3, "b"))
        await settle()
        await h.release(0)
        assert h.commits == [1]
        await h.release(1, 2)
        await settle()
        assert h.commits == [1]  # 2 finished, but 1 did not: the commit stays at 1
        assert 3 not in h.started  # nothing more starts once a record was abandoned
        assert h.work.ledger.first_unfinished() == 1

    async def test_cancelling_in_flight_work_never_commits_past_it(self) -> None:
        # A rebalance revokes the partition while 0 and 2 are in flight and 1, 3 finished.
        h = Harness()
        h.add((0, "a"), (1, "b"), (2, "c"), (3, "d"))
        await settle()
        await h.release(1, 3)
        assert await h.work.cancel() == 2
        assert sorted(h.cancelled) == [0, 2]
        assert h.commits == []
        assert h.work.uncommitted_finished() is None  # the final commit on revoke has nothing to add
        h.add((4, "e"))
        await settle()
        assert 4 not in h.started  # a cancelled partition starts nothing new

    async def test_cancelling_after_a_finished_prefix_owes_only_that_prefix(self) -> None:
        h = Harness()
        h.add((0, "a"), (1, "b"), (2, "c"))
        await settle()

        # The first commit is still on its way when the partition is revoked.
        async def slow_commit(offset: int) -> None:
            await asyncio.Event().wait()

        h.on_commit = slow_commit
        await h.release(0)
        await h.release(2)
        await h.work.cancel()
        assert h.work.uncommitted_finished() == 1  # 0 finished; 1 (cancelled) holds 2 back
        assert 1 in h.cancelled

    async def test_commits_never_go_backwards_when_an_earlier_commit_is_slow(self) -> None:
        h = Harness()
        first_commit_started = asyncio.Event()
        let_it_finish = asyncio.Event()

        async def commit(offset: int) -> None:
            if not h.commits:
                first_commit_started.set()
                h.commits.append(offset)
                await let_it_finish.wait()
                return
            h.commits.append(offset)

        h.on_commit = commit
        h.add((0, "a"), (1, "b"))
        await settle()
        await h.release(0)
        await first_commit_started.wait()
        await h.release(1)
        let_it_finish.set()
        await eventually(lambda: len(h.commits) == 2)
        assert h.commits == [1, 2]

    async def test_stop_starting_lets_in_flight_work_finish_and_starts_nothing_new(self) -> None:
        h = Harness()
        h.add((0, "a"), (1, "a"))
        await settle()
        h.work.stop_starting()
        await h.release(0)
        await settle()
        assert h.started == [0]
        assert h.commits == [1]

    async def test_a_crash_of_the_processing_itself_is_reported(self) -> None:
        h = Harness()
        h.add((99, "a"))
        await settle()
        await h.release(99)
        await eventually(lambda: len(h.crashes) == 1)
        assert isinstance(h.crashes[0], KeyError)
        assert h.commits == []

    def test_needs_a_limit_of_at_least_one(self) -> None:
        with pytest.raises(ValueError, match="limit"):
            Harness(limit=0)
