"""`reelay accounts list | show | connect | disconnect` (a Typer sub-app, added by app.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from reelay_cli.client import ApiError, ReelayApi
from reelay_cli.commands import (
    DEFAULT_TIMEOUT_SECONDS,
    IntervalOpt,
    JsonOpt,
    KeyOpt,
    TimeoutOpt,
    UrlOpt,
    answer,
    api_of,
    exit_with,
    reported,
    wiring_of,
)
from reelay_cli.exits import EXIT_CODES, ExitCode
from reelay_cli.follow import follow_account
from reelay_cli.output import Output, account_summary, accounts_table

accounts_app = typer.Typer(
    help="TikTok accounts: list, show, connect (the creator consents in a browser), disconnect.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@accounts_app.command("list")
def accounts_list(
    ctx: typer.Context, url: UrlOpt = None, api_key: KeyOpt = None, json_mode: JsonOpt = False
) -> None:
    """The registered accounts. With --json: {"items": [...]}."""
    answer(
        ctx,
        url,
        api_key,
        json_mode,
        lambda api: {"items": api.accounts()},
        lambda out, listing: out.out.print(accounts_table(listing["items"])),
    )


@accounts_app.command("show")
def accounts_show(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """One account: status, scopes, token expiry, the creator. With --json: the account."""

    def show(out: Output, view: dict[str, Any]) -> None:
        for line in account_summary(view):
            out.say(line)

    answer(ctx, url, api_key, json_mode, lambda api: api.account(account_id), show)


@accounts_app.command("connect")
def accounts_connect(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="A scope to ask for (repeat); else ingest's default.")
    ] = None,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL only; open no browser.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the account is connected.")
    ] = True,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_SECONDS,
    poll_interval: IntervalOpt = 1.0,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Connect (or reconnect) an account: print TikTok's authorize URL, open it in a browser on a
    terminal, and wait until the creator has consented (status `connected`).

    With --json, JSON lines: {"type": "authorize", "authorize_url", ...}, then (waiting)
    {"type": "result", "account", "timed_out", "exit_code"}.
    """
    wiring = wiring_of(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with reported(out), api_of(url, api_key, wiring) as api:
        before = _account_or_none(api, account_id)
        grant = api.connect(account_id, list(scope or []))
        authorize_url = str(grant.get("authorize_url", ""))
        if json_mode:
            out.json({"type": "authorize", **grant})
        else:
            out.say("Open this URL to let Reelay post for the account:")
            out.out.print(authorize_url, markup=False, highlight=False)
        if not no_browser and out.out.is_terminal and out.err.is_terminal:
            wiring.open_browser(authorize_url)
        if not wait:
            return
        out.note("waiting for the consent...")
        followed = follow_account(
            api,
            account_id,
            done=lambda view: _newly_connected(before, view),
            timeout=timeout,
            interval=poll_interval,
            clock=wiring.clock,
        )
        code = ExitCode.UNCONFIRMED if followed.timed_out else ExitCode.OK
        if json_mode:
            out.json(
                {
                    "type": "result",
                    "account": followed.last,
                    "timed_out": followed.timed_out,
                    "exit_code": int(code),
                }
            )
        elif followed.timed_out:
            status_now = (followed.last or {}).get("status", "not registered")
            out.note(f"gave up waiting after {timeout:g} s; the account is {status_now}")
        else:
            out.say(f"{account_id} is connected")
        exit_with(code)


def _account_or_none(api: ReelayApi, account_id: str) -> dict[str, Any] | None:
    # A 404 is an answer here: the account is being connected for the first time.
    try:
        return api.account(account_id)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _newly_connected(before: dict[str, Any] | None, view: dict[str, Any]) -> bool:
    """Connected by this consent: a reconnect of an account that was connected already ends when its
    grant changes (new tokens or scopes), not at once."""
    if view.get("status") != "connected":
        return False
    if before is None or before.get("status") != "connected":
        return True
    keys = ("scopes", "access_expires_at", "refresh_expires_at", "updated_at")
    return any(view.get(k) != before.get(k) for k in keys)


@accounts_app.command("disconnect")
def accounts_disconnect(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Disconnect an account (its tokens are revoked and forgotten). With --json: the account."""
    answer(
        ctx,
        url,
        api_key,
        json_mode,
        lambda api: api.disconnect(account_id),
        lambda out, view: out.say(f"{account_id} is {view.get('status', 'disconnected')}"),
    )
