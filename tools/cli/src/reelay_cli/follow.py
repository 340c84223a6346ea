"""Follow an upload or an account by polling ingest, with a deadline (`--wait`, `--watch`, `connect`).

ingest has no push channel for clients, so the CLI polls the same GET routes a person would. An
upload's history is append-only, so each state is reported once even when several changed between
two polls. A 5xx or a dropped connection while following (ingest restarting) is retried until the
deadline; a 4xx is an answer and ends the follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reelay_cli.client import ApiError, ReelayApi, Unreachable
from reelay_cli.exits import TERMINAL_STATES


@dataclass(frozen=True)
class Clock:
    """Time as the follow loops see it (a fake one in unit tests, so no test waits for real)."""

    now: Callable[[], float] = field(default=time.monotonic)
    sleep: Callable[[float], None] = field(default=time.sleep)


@dataclass(frozen=True)
class Followed:
    """How a follow ended: the last answer seen (None if none came) and whether time ran out."""

    last: dict[str, Any] | None
    timed_out: bool


def _poll(fetch: Callable[[], dict[str, Any]], *, retry_not_found: bool) -> dict[str, Any] | None:
    try:
        return fetch()
    except Unreachable:
        return None
    except ApiError as exc:
        if exc.status >= 500 or (retry_not_found and exc.status == 404):
            return None
        raise


def follow_upload(
    api: ReelayApi,
    request_id: str,
    *,
    timeout: float,
    interval: float,
    clock: Clock,
    on_state: Callable[[dict[str, Any]], None],
) -> Followed:
    """Poll the upload until it is in a terminal state or `timeout` seconds have passed, calling
    `on_state` with each history entry ({state, at, source, detail}) not reported yet."""
    deadline = clock.now() + timeout
    reported = 0
    last: dict[str, Any] | None = None
    while True:
        view = _poll(lambda: api.upload(request_id), retry_not_found=False)
        if view is not None:
            last = view
            history = view.get("history") or [{"state": view.get("state")}]
            for entry in history[reported:]:
                on_state(entry)
            reported = max(reported, len(history))
            if view.get("state") in TERMINAL_STATES:
                return Followed(last, timed_out=False)
        remaining = deadline - clock.now()
        if remaining <= 0:
            return Followed(last, timed_out=True)
        clock.sleep(min(interval, remaining))


def follow_account(
    api: ReelayApi,
    account_id: str,
    *,
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    interval: float,
    clock: Clock,
) -> Followed:
    """Poll the account until `done(view)` or `timeout` seconds have passed. A 404 is waited
    through: an account being connected for the first time exists once the creator consented."""
    deadline = clock.now() + timeout
    last: dict[str, Any] | None = None
    while True:
        view = _poll(lambda: api.account(account_id), retry_not_found=True)
        if view is not None:
            last = view
            if done(view):
                return Followed(last, timed_out=False)
        remaining = deadline - clock.now()
        if remaining <= 0:
            return Followed(last, timed_out=True)
        clock.sleep(min(interval, remaining))
