"""The CLI's own copy of the upload states (it may not import reelay_common) agrees with the domain's."""

from __future__ import annotations

import pytest
from reelay_cli.exits import TERMINAL_STATES as CLI_TERMINAL_STATES
from reelay_cli.exits import ExitCode, exit_code_of_state
from reelay_cli.uploads import State
from reelay_common.domain.states import TERMINAL_STATES, UploadState


def test_the_terminal_states_are_the_domain_s() -> None:
    assert {str(s) for s in TERMINAL_STATES} == CLI_TERMINAL_STATES


def test_uploads_state_choices_are_every_state() -> None:
    assert [s.value for s in State] == [s.value for s in UploadState]


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ("published", ExitCode.OK),
        ("inbox_delivered", ExitCode.OK),
        ("failed", ExitCode.FAILED),
        ("unconfirmed", ExitCode.UNCONFIRMED),
        ("cancelled", ExitCode.UNCONFIRMED),
    ],
)
def test_each_terminal_state_has_its_exit_code(state: str, code: ExitCode) -> None:
    assert exit_code_of_state(state) is code
