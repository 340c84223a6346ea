"""What `reelay` exits with, and which upload states end it how (README, "Command line").

The CLI must not import reelay_common (it talks to ingest's HTTP API only), so the terminal states
are restated here; tests/unit/cli/test_cli_exits.py checks them against reelay_common's.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The process exit codes, documented in `reelay --help`."""

    OK = 0  # published / inbox_delivered, or the command did what it was asked
    FAILED = 1  # the upload ended `failed`, or the API refused the request, or it could not be reached
    USAGE = 2  # bad flags or missing configuration (click's own code for usage errors)
    UNCONFIRMED = 3  # gave up waiting, or the upload ended without a confirmed outcome
    INTERRUPTED = 130  # Ctrl-C while following: the shell's 128 + SIGINT; the upload goes on


# A direct post ends `published`; an inbox upload ends `inbox_delivered` (the creator finishes the
# post in the TikTok app): both are the confirmed success of their mode.
SUCCESS_STATES = frozenset({"published", "inbox_delivered"})
FAILURE_STATES = frozenset({"failed"})
# `unconfirmed`: TikTok never said how it ended (it may still be corrected by a late webhook);
# `cancelled`: withdrawn before TikTok had it. Neither is a success nor a failure of the upload.
UNSETTLED_TERMINAL_STATES = frozenset({"unconfirmed", "cancelled"})
TERMINAL_STATES = SUCCESS_STATES | FAILURE_STATES | UNSETTLED_TERMINAL_STATES


def exit_code_of_state(state: str) -> ExitCode:
    """The exit code for an upload that ended in `state` (a terminal state)."""
    if state in SUCCESS_STATES:
        return ExitCode.OK
    if state in FAILURE_STATES:
        return ExitCode.FAILED
    return ExitCode.UNCONFIRMED


# The exit codes as `reelay --help` shows them (Typer's markdown help).
EXIT_CODES = """\
**Exit codes**

- 0: published (inbox_delivered for --inbox), or the command succeeded
- 1: the upload failed, or the API refused the request (its error code is printed), or it could not
  be reached
- 2: usage: bad flags or missing configuration
- 3: unconfirmed: --wait, --watch or connect timed out, or the upload ended unconfirmed or cancelled
- 130: interrupted (Ctrl-C) while following; the upload itself goes on
"""
