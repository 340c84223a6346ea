"""Hypothesis state machine over the real transition rules (states.can_transition) and the
FakeUploadStore: events of one upload delivered in any order, any number of times, mixed with
stray events to any state from any source, end where the rules say, and the clean run's events
end exactly where the clean run ends.

What "the same" means here (docs/architecture.md, "States"):
- the final state is the furthest state of the clean run that was delivered (`unconfirmed` lies
  before the outcome that corrects it); once every event of the run has come, it is the run's end;
- the history is the clean history with the steps that came after a later one left out: its
  states are a subsequence of the run, in the run's order, each once, and each entry carries the
  source and detail of the first delivery of that state;
- with stray events too: the state and history are those of folding can_transition over the
  deliveries, every step strictly forward (or the documented `unconfirmed` correction), no state
  twice.

Budget: REELAY_FUZZ_EXAMPLES runs (small in `make test`), e.g. `REELAY_FUZZ_EXAMPLES=5000 pytest
tests/unit/platform/test_platform_state_fuzz.py`.
"""

from __future__ import annotations

import os
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, TypeVar, get_args

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from reelay_common.domain.messages import StateSource, UploadRequested, UrlSource
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState, can_transition
from reelay_testing.stores import FakeUploadStore

EXAMPLES = int(os.environ.get("REELAY_FUZZ_EXAMPLES", "60"))
S = UploadState
REQUEST_ID = "req-fuzz"
SOURCES: tuple[StateSource, ...] = get_args(StateSource)
_TAIL = (S.UPLOADING, S.UPLOADED, S.PROCESSING)
# Every clean run an upload can have, from its first state to its end.
CLEAN_RUNS: tuple[tuple[UploadState, ...], ...] = (
    (S.ACCEPTED, *_TAIL, S.PUBLISHED),
    (S.ACCEPTED, *_TAIL, S.INBOX_DELIVERED),
    (S.ACCEPTED, *_TAIL, S.FAILED),
    (S.ACCEPTED, *_TAIL, S.UNCONFIRMED),
    (S.ACCEPTED, *_TAIL, S.UNCONFIRMED, S.PUBLISHED),
    (S.ACCEPTED, *_TAIL, S.UNCONFIRMED, S.FAILED),
    (S.ACCEPTED, S.UPLOADING, S.FAILED),
    (S.ACCEPTED, S.FAILED),  # a dead-lettered record
    (S.ACCEPTED, S.CANCELLED),
    (S.SCHEDULED, S.ACCEPTED, *_TAIL, S.PUBLISHED),
    (S.SCHEDULED, S.CANCELLED),
)

T = TypeVar("T")


def at_once(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a FakeUploadStore call, which never awaits (each call is atomic)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the fake store awaited")


def test_each_clean_run_is_a_chain_of_the_rules() -> None:
    # What makes order irrelevant: each later state of a run is reachable from each earlier one,
    # and never the other way round.
    for run in CLEAN_RUNS:
        for i, earlier in enumerate(run):
            for later in run[i + 1 :]:
                assert can_transition(earlier, later), (run, earlier, later)
                assert not can_transition(later, earlier), (run, later, earlier)


class UploadEvents(RuleBasedStateMachine):
    """One upload; rules deliver its run's events (replays included) and stray ones."""

    def __init__(self) -> None:
        super().__init__()
        self.store = FakeUploadStore()
        self.clean_run: tuple[UploadState, ...] = ()
        self.strays = 0
        # The reference: the fold of can_transition over what was delivered.
        self.expected_state = S.ACCEPTED
        self.expected_history: list[tuple[UploadState, str, dict[str, Any]]] = []

    @initialize(run=st.sampled_from(CLEAN_RUNS))
    def create(self, run: tuple[UploadState, ...]) -> None:
        self.clean_run = run
        publish_at = datetime.now(UTC) + timedelta(hours=1) if run[0] is S.SCHEDULED else None
        cmd = UploadRequested(
            request_id=REQUEST_ID,
            account_id="acct-fuzz",
            mode="inbox",
            source=UrlSource(url="https://videos.example.com/a.mp4"),
            publish_at=publish_at,
        )
        record, created = at_once(self.store.create(cmd, source="ingest"))
        assert created
        assert record.state is run[0]
        self.expected_state = run[0]
        self.expected_history = [(run[0], "ingest", {})]

    def _deliver(self, target: UploadState, source: StateSource, note: int) -> None:
        detail = {"note": note}
        moved = at_once(self.store.transition(REQUEST_ID, Change(target, source, detail=detail)))
        if can_transition(self.expected_state, target):
            assert moved is not None
            assert moved.state is target
            self.expected_state = target
            self.expected_history.append((target, source, detail))
        else:
            assert moved is None, (self.expected_state, target)

    @rule(data=st.data(), source=st.sampled_from(SOURCES), note=st.integers(0, 3))
    def deliver_an_event_of_the_run(self, data: st.DataObject, source: StateSource, note: int) -> None:
        """Any event of the clean run, again and again, in any order (the first state included)."""
        self._deliver(data.draw(st.sampled_from(self.clean_run)), source, note)

    @rule(target_state=st.sampled_from(list(S)), source=st.sampled_from(SOURCES), note=st.integers(0, 3))
    def deliver_a_stray_event(self, target_state: UploadState, source: StateSource, note: int) -> None:
        """An event to any state from any source: late, foreign to the run, or plain wrong."""
        if target_state not in self.clean_run:
            self.strays += 1
        self._deliver(target_state, source, note)

    def _stored(self) -> list[tuple[UploadState, str, dict[str, Any]]]:
        record = at_once(self.store.get(REQUEST_ID))
        assert record is not None
        assert record.state is self.expected_state
        return [(h.state, h.source, h.detail) for h in record.history]

    @invariant()
    def history_is_the_fold_of_the_rules(self) -> None:
        if not self.clean_run:
            return
        history = self._stored()
        assert history == self.expected_history
        states = [h[0] for h in history]
        assert len(set(states)) == len(states), "no state twice"
        for before, after in pairwise(states):
            assert can_transition(before, after), "strictly forward, or the unconfirmed correction"

    @invariant()
    def without_strays_the_order_does_not_matter(self) -> None:
        if not self.clean_run or self.strays:
            return
        states = [h[0] for h in self._stored()]
        positions = [self.clean_run.index(s) for s in states]
        assert positions == sorted(positions), "a subsequence of the clean run, in its order"
        assert states[0] is self.clean_run[0]

    def teardown(self) -> None:
        if not self.clean_run or self.strays:
            return
        # Every event of the run comes at last, in the clean order: the upload ends where the clean
        # run ends, whatever came before.
        for state in self.clean_run:
            self._deliver(state, "poller", 9)
        history = self._stored()
        assert history[-1][0] is self.clean_run[-1]
        firsts = {h[0]: h for h in self.expected_history}
        assert history == [firsts[s] for s in self.clean_run if s in firsts]


UploadEvents.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=25, deadline=None, derandomize=EXAMPLES <= 60
)
TestUploadEvents = UploadEvents.TestCase
