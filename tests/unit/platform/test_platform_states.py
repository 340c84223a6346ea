"""The upload state machine: forward only, terminal states stay put (unconfirmed may be corrected)."""

from __future__ import annotations

import pytest
from reelay_common.domain.states import TERMINAL_STATES, UploadState, can_transition, states_before

S = UploadState
PATH = [S.SCHEDULED, S.ACCEPTED, S.UPLOADING, S.UPLOADED, S.PROCESSING]
FINAL = [S.PUBLISHED, S.INBOX_DELIVERED, S.FAILED]


class TestTransitionTable:
    @pytest.mark.parametrize(
        ("current", "target"), [(a, b) for i, a in enumerate(PATH) for b in PATH[i + 1 :]]
    )
    def test_moves_forward_along_the_path(self, current: UploadState, target: UploadState) -> None:
        assert can_transition(current, target)

    @pytest.mark.parametrize(("current", "target"), [(b, a) for i, a in enumerate(PATH) for b in PATH[i:]])
    def test_never_moves_back_or_stays(self, current: UploadState, target: UploadState) -> None:
        assert not can_transition(current, target)

    @pytest.mark.parametrize("current", PATH)
    @pytest.mark.parametrize("target", [*FINAL, S.UNCONFIRMED])
    def test_any_live_state_may_end(self, current: UploadState, target: UploadState) -> None:
        assert can_transition(current, target)

    @pytest.mark.parametrize("current", [*FINAL, S.CANCELLED])
    @pytest.mark.parametrize("target", list(UploadState))
    def test_final_states_never_change(self, current: UploadState, target: UploadState) -> None:
        assert not can_transition(current, target)

    @pytest.mark.parametrize("target", FINAL)
    def test_unconfirmed_may_be_corrected_by_the_real_outcome(self, target: UploadState) -> None:
        assert can_transition(S.UNCONFIRMED, target)

    @pytest.mark.parametrize("target", [*PATH, S.UNCONFIRMED, S.CANCELLED])
    def test_unconfirmed_never_goes_back_to_a_live_state(self, target: UploadState) -> None:
        assert not can_transition(S.UNCONFIRMED, target)

    def test_terminal_states_are_the_four_outcomes_and_cancelled(self) -> None:
        assert (
            {s for s in UploadState if s.is_terminal}
            == TERMINAL_STATES
            == {
                *FINAL,
                S.UNCONFIRMED,
                S.CANCELLED,
            }
        )

    @pytest.mark.parametrize("current", [S.SCHEDULED, S.ACCEPTED])
    def test_an_upload_tiktok_has_nothing_of_may_be_cancelled(self, current: UploadState) -> None:
        assert can_transition(current, S.CANCELLED)

    @pytest.mark.parametrize("current", [S.UPLOADING, S.UPLOADED, S.PROCESSING, S.UNCONFIRMED])
    def test_once_tiktok_has_it_it_cannot_be_cancelled(self, current: UploadState) -> None:
        assert not can_transition(current, S.CANCELLED)


class TestStatesBefore:
    @pytest.mark.parametrize("target", list(UploadState))
    def test_is_exactly_the_states_that_may_reach_target(self, target: UploadState) -> None:
        assert set(states_before(target)) == {s for s in UploadState if can_transition(s, target)}

    def test_scheduled_is_reachable_from_nowhere_and_accepted_only_from_it(self) -> None:
        assert states_before(S.SCHEDULED) == []
        assert states_before(S.ACCEPTED) == [S.SCHEDULED]

    def test_published_is_reachable_from_live_states_and_unconfirmed(self) -> None:
        assert set(states_before(S.PUBLISHED)) == {*PATH, S.UNCONFIRMED}
