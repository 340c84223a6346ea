"""The `reelay` commands (Typer): each resolves its configuration, calls ingest, prints, exits.

Decisions live beside the calls they concern: which states end an upload how (exits.py), how a
follow polls (follow.py), what is printed (output.py). This module wires them to the flags.
"""

from __future__ import annotations

import os
import sys
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from reelay_cli.client import ApiError, CliError, ReelayApi, content_type_of, post_info_json
from reelay_cli.exits import ExitCode, exit_code_of_state
from reelay_cli.follow import Clock, Followed, follow_account, follow_upload
from reelay_cli.output import (
    Output,
    account_summary,
    accounts_table,
    state_line,
    upload_summary,
    uploads_table,
)
from reelay_cli.progress import upload_progress

EXIT_CODES = """\
**Exit codes**

- 0: published (inbox_delivered for --inbox), or the command succeeded
- 1: the upload failed, or the API refused the request (its error code is printed), or it could not
  be reached
- 2: usage: bad flags or missing configuration
- 3: unconfirmed: --wait, --watch or connect timed out, or the upload ended unconfirmed or cancelled
- 130: interrupted (Ctrl-C) while following; the upload itself goes on
"""

HELP = f"""Upload videos to TikTok through Reelay's ingest API, follow them, and manage accounts.

Configuration: REELAY_URL and REELAY_API_KEY, or --url and --api-key (a flag wins over its
variable). With --json a command prints JSON only, on stdout: one document, or JSON lines (one
object with a "type" per line) with --wait, --watch and accounts connect.

{EXIT_CODES}"""

DEFAULT_TIMEOUT_SECONDS = 600.0


def open_in_browser(url: str) -> bool:
    """Open `url` in a graphical browser, if this session has one. Without a display on Linux,
    webbrowser would fall back to a console browser (lynx, w3m) that takes over the terminal and
    cannot do TikTok's login; the URL is printed either way. $BROWSER, when set, is respected."""
    graphical = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("BROWSER")
    if sys.platform.startswith("linux") and not graphical:
        return False
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


@dataclass
class Wiring:
    """What a command talks to. The real ones by default; unit tests pass their own as the click
    context's `obj` (an httpx.MockTransport, a fake clock, a browser that records the URL)."""

    transport: httpx.BaseTransport | None = None
    clock: Clock = field(default_factory=Clock)
    open_browser: Callable[[str], bool] = open_in_browser
    force_terminal: bool | None = None


class Privacy(StrEnum):
    """TikTok's privacy levels (the creator's account offers a subset: `accounts show`)."""

    PUBLIC_TO_EVERYONE = "PUBLIC_TO_EVERYONE"
    MUTUAL_FOLLOW_FRIENDS = "MUTUAL_FOLLOW_FRIENDS"
    FOLLOWER_OF_CREATOR = "FOLLOWER_OF_CREATOR"
    SELF_ONLY = "SELF_ONLY"


class State(StrEnum):
    """Every upload state, for `uploads --state`."""

    SCHEDULED = "scheduled"
    ACCEPTED = "accepted"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    PROCESSING = "processing"
    PUBLISHED = "published"
    INBOX_DELIVERED = "inbox_delivered"
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"
    CANCELLED = "cancelled"


app = typer.Typer(
    name="reelay",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
accounts_app = typer.Typer(
    help="TikTok accounts: list, show, connect (the creator consents in a browser), disconnect.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(accounts_app, name="accounts")

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="REELAY_URL", show_envvar=True, help="ingest's base URL, http(s)://host:port."
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="REELAY_API_KEY", show_envvar=True, help="An API key ingest accepts."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON only, on stdout.")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0.0, help="Seconds to wait before giving up (exit 3).")
]
# Hidden: how often to poll while following; 1 s is what a person watching wants.
IntervalOpt = Annotated[float, typer.Option("--poll-interval", min=0.0, hidden=True)]


def _wiring(ctx: typer.Context) -> Wiring:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Wiring) else Wiring()


def _api(url: str | None, api_key: str | None, wiring: Wiring) -> ReelayApi:
    """The API client, or a usage error (exit 2) naming the configuration that is missing."""
    if not url:
        raise typer.BadParameter(
            "no ingest URL: pass --url or set REELAY_URL (e.g. http://127.0.0.1:8000)",
            param_hint="'--url' / REELAY_URL",
        )
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{url!r} is not an http(s) URL", param_hint="'--url' / REELAY_URL")
    if not api_key:
        raise typer.BadParameter(
            "no API key: pass --api-key or set REELAY_API_KEY", param_hint="'--api-key' / REELAY_API_KEY"
        )
    return ReelayApi(url, api_key, transport=wiring.transport)


@contextmanager
def _reported(out: Output) -> Iterator[None]:
    """Turn a CliError into its one-line report and exit 1 (never a traceback)."""
    try:
        yield
    except CliError as exc:
        out.error(exc)
        raise typer.Exit(ExitCode.FAILED) from None


def _exit(code: ExitCode) -> NoReturn:
    raise typer.Exit(int(code))


# ------------------------------------------------------------------------------------------ uploads


@app.command()
def upload(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(metavar="FILE|URL", help="A video file to stream, or an http(s) URL ingest fetches."),
    ],
    account: Annotated[str, typer.Option("--account", "-a", help="The registered account to post to.")],
    inbox: Annotated[
        bool, typer.Option("--inbox", help="Send to the creator's TikTok inbox instead of posting directly.")
    ] = False,
    privacy: Annotated[
        Privacy | None,
        typer.Option("--privacy", show_default="SELF_ONLY", help="Privacy level of a direct post."),
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="The post's caption (direct posts).")] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Makes the call idempotent; else ingest makes one.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the upload until it ends.")] = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_SECONDS,
    poll_interval: IntervalOpt = 1.0,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Upload a video (a file, streamed with a progress bar, or a URL) and optionally --wait for it.

    With --json: the 202 answer as one document; with --wait, JSON lines: {"type": "accepted"},
    then {"type": "state"} per state, then {"type": "result", "upload", "timed_out", "exit_code"}.
    """
    wiring = _wiring(ctx)
    if inbox and (privacy is not None or title is not None):
        raise typer.BadParameter(
            "--privacy and --title are for direct posts; an --inbox upload takes neither",
            param_hint="'--inbox'",
        )
    is_url = source.startswith(("http://", "https://"))
    path = Path(source)
    if not is_url:
        if "://" in source:
            raise typer.BadParameter("only http:// and https:// URLs can be uploaded", param_hint="FILE|URL")
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {source}", param_hint="FILE|URL")
    mode = "inbox" if inbox else "direct"
    level = (privacy or Privacy.SELF_ONLY).value
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with _reported(out), _api(url, api_key, wiring) as api:
        if is_url:
            body: dict[str, Any] = {"account_id": account, "mode": mode, "video_url": source}
            if not inbox:
                body["post_info"] = {
                    "privacy_level": level,
                    **({"title": title} if title is not None else {}),
                }
            if request_id is not None:
                body["request_id"] = request_id
            accepted = api.upload_url(body)
        else:
            fields = {"account_id": account, "mode": mode}
            if not inbox:
                fields["post_info"] = post_info_json(level, title)
            if request_id is not None:
                fields["request_id"] = request_id
            size = path.stat().st_size
            plain = not out.err.is_terminal
            with upload_progress(out.err, path.name, size, plain=plain) as on_read:
                accepted = api.upload_file(path, fields, content_type_of(path), on_read)
        if not wait:
            if json_mode:
                out.json(accepted)
            else:
                replayed = " (replayed: accepted before)" if accepted.get("replayed") else ""
                out.say(f"accepted {accepted.get('request_id')}: {accepted.get('state')}{replayed}")
                out.say(f"status: {accepted.get('status_url')}")
            return
        if json_mode:
            out.json({"type": "accepted", **accepted})
        else:
            out.say(f"accepted {accepted.get('request_id')}")
        _follow(out, api, str(accepted["request_id"]), timeout, poll_interval, wiring.clock)


def _follow(
    out: Output, api: ReelayApi, request_id: str, timeout: float, interval: float, clock: Clock
) -> NoReturn:
    """Report each new state of the upload until it ends or time runs out; exit by its outcome."""

    def on_state(entry: dict[str, Any]) -> None:
        if out.json_mode:
            out.json({"type": "state", "request_id": request_id, **entry})
        else:
            out.say(state_line(entry))

    try:
        followed = follow_upload(
            api, request_id, timeout=timeout, interval=interval, clock=clock, on_state=on_state
        )
    except KeyboardInterrupt:
        # Only the following stops: the upload is ingest's now (`reelay cancel` withdraws it).
        out.note(f"stopped following; the upload goes on (reelay status {request_id} --watch)")
        _exit(ExitCode.INTERRUPTED)
    _exit(_report_outcome(out, followed, timeout))


def _report_outcome(out: Output, followed: Followed, timeout: float) -> ExitCode:
    last = followed.last or {}
    state = str(last.get("state") or "")
    code = ExitCode.UNCONFIRMED if followed.timed_out else exit_code_of_state(state)
    if out.json_mode:
        out.json(
            {
                "type": "result",
                "upload": followed.last,
                "timed_out": followed.timed_out,
                "exit_code": int(code),
            }
        )
    elif followed.timed_out:
        out.note(f"gave up waiting after {timeout:g} s; the upload is {state or 'unknown'}")
    elif code is ExitCode.OK:
        posts = ", ".join(map(str, last.get("post_ids") or []))
        out.say(f"{state}" + (f": post {posts}" if posts else ""))
    else:
        history = last.get("history") or []
        why = (history[-1].get("detail") or {}) if history else {}
        reason = " ".join(f"{k}={v}" for k, v in why.items())
        out.note(f"the upload ended {state}" + (f": {reason}" if reason else ""))
    return code


@app.command()
def status(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The upload's request_id.")],
    watch: Annotated[bool, typer.Option("--watch", help="Follow the upload until it ends.")] = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_SECONDS,
    poll_interval: IntervalOpt = 1.0,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Show an upload (exit 0), or --watch it until it ends (exit by its outcome, as upload --wait).

    With --json: the upload as one document; with --watch, JSON lines as upload --wait prints.
    """
    wiring = _wiring(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with _reported(out), _api(url, api_key, wiring) as api:
        if watch:
            _follow(out, api, request_id, timeout, poll_interval, wiring.clock)
        view = api.upload(request_id)
        if json_mode:
            out.json(view)
        else:
            for line in upload_summary(view):
                out.say(line)


@app.command()
def uploads(
    ctx: typer.Context,
    account: Annotated[
        str | None, typer.Option("--account", "-a", help="Only this account's uploads.")
    ] = None,
    state: Annotated[State | None, typer.Option("--state", help="Only uploads in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")] = 50,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """List uploads, newest first. With --json: the API's {"items": [...], "count": N}."""
    wiring = _wiring(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with _reported(out), _api(url, api_key, wiring) as api:
        listing = api.uploads(account_id=account, state=state.value if state else None, limit=limit)
        if json_mode:
            out.json(listing)
        else:
            out.out.print(uploads_table(listing.get("items") or []))


@app.command()
def cancel(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The upload's request_id.")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Cancel an upload TikTok has nothing of yet (scheduled or queued). With --json: the upload."""
    wiring = _wiring(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with _reported(out), _api(url, api_key, wiring) as api:
        view = api.cancel(request_id)
        if json_mode:
            out.json(view)
        elif view.get("state") == "cancelled":
            out.say(f"cancelled {request_id}")
        else:
            out.say(f"TikTok was asked to stop its download of {request_id}; it ends failed once it confirms")


# ----------------------------------------------------------------------------------------- accounts


@accounts_app.command("list")
def accounts_list(
    ctx: typer.Context, url: UrlOpt = None, api_key: KeyOpt = None, json_mode: JsonOpt = False
) -> None:
    """The registered accounts. With --json: {"items": [...]}."""
    wiring = _wiring(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with _reported(out), _api(url, api_key, wiring) as api:
        items = api.accounts()
        if json_mode:
            out.json({"items": items})
        else:
            out.out.print(accounts_table(items))


@accounts_app.command("show")
def accounts_show(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """One account: status, scopes, token expiry, the creator. With --json: the account."""
    wiring = _wiring(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with _reported(out), _api(url, api_key, wiring) as api:
        view = api.account(account_id)
        if json_mode:
            out.json(view)
        else:
            for line in account_summary(view):
                out.say(line)


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
    wiring = _wiring(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with _reported(out), _api(url, api_key, wiring) as api:
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
        _exit(code)


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
    wiring = _wiring(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with _reported(out), _api(url, api_key, wiring) as api:
        view = api.disconnect(account_id)
        if json_mode:
            out.json(view)
        else:
            out.say(f"{account_id} is {view.get('status', 'disconnected')}")
