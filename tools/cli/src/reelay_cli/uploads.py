"""`reelay upload`, `status`, `uploads`, `cancel`: the upload commands (registered by app.py)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from reelay_cli.client import ReelayApi, content_type_of, post_info_json
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
from reelay_cli.exits import ExitCode, exit_code_of_state
from reelay_cli.follow import Clock, Followed, follow_upload
from reelay_cli.output import Output, state_line, upload_summary, uploads_table
from reelay_cli.progress import upload_progress


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
    wiring = wiring_of(ctx)
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
        if not path.exists():
            raise typer.BadParameter(f"no such file: {source}", param_hint="FILE|URL")
        if not path.is_file():
            raise typer.BadParameter(f"not a regular file: {source}", param_hint="FILE|URL")
        try:
            path.open("rb").close()  # refused here, not as a traceback halfway through the request
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {source}: {exc.strerror}", param_hint="FILE|URL") from exc
    mode = "inbox" if inbox else "direct"
    level = (privacy or Privacy.SELF_ONLY).value
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with reported(out), api_of(url, api_key, wiring) as api:
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
        exit_with(ExitCode.INTERRUPTED)
    exit_with(_report_outcome(out, followed, timeout))


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
    wiring = wiring_of(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with reported(out), api_of(url, api_key, wiring) as api:
        if watch:
            _follow(out, api, request_id, timeout, poll_interval, wiring.clock)
        view = api.upload(request_id)
        if json_mode:
            out.json(view)
        else:
            for line in upload_summary(view):
                out.say(line)


def list_uploads(
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
    answer(
        ctx,
        url,
        api_key,
        json_mode,
        lambda api: api.uploads(account_id=account, state=state.value if state else None, limit=limit),
        lambda out, listing: out.out.print(uploads_table(listing.get("items") or [])),
    )


def cancel(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The upload's request_id.")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Cancel an upload TikTok has nothing of yet (scheduled or queued). With --json: the upload."""

    def show(out: Output, view: dict[str, Any]) -> None:
        if view.get("state") == "cancelled":
            out.say(f"cancelled {request_id}")
        else:
            out.say(f"TikTok was asked to stop its download of {request_id}; it ends failed once it confirms")

    answer(ctx, url, api_key, json_mode, lambda api: api.cancel(request_id), show)
