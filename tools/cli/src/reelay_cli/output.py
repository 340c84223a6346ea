"""What the commands print: Rich text for people, or JSON for programs (--json).

With --json, stdout carries JSON only: one document per command, or JSON lines (one object per
line, each with a `type`) for what follows an upload or an account over time. People's text goes
to stdout, and errors and progress to stderr, so `reelay ... > out` keeps the result alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from reelay_cli.client import ApiError, CliError


class Output:
    """The two consoles of one command, and whether it speaks JSON."""

    def __init__(self, *, json_mode: bool, force_terminal: bool | None = None) -> None:
        self.json_mode = json_mode
        self.out = Console(force_terminal=force_terminal, soft_wrap=True, highlight=False)
        self.err = Console(stderr=True, force_terminal=force_terminal, soft_wrap=True, highlight=False)

    def json(self, document: Any) -> None:
        """One JSON document (or one JSON line) on stdout."""
        self.out.file.write(json.dumps(document, ensure_ascii=False) + "\n")
        self.out.file.flush()

    def say(self, text: str) -> None:
        """A line for people on stdout (nothing in JSON mode)."""
        if not self.json_mode:
            self.out.print(text)

    def note(self, text: str) -> None:
        """A line for people on stderr (nothing in JSON mode)."""
        if not self.json_mode:
            self.err.print(text)

    def error(self, exc: CliError) -> None:
        """The API's error code and message (or why it could not be reached), in one line."""
        if self.json_mode:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            body: dict[str, Any] = {"error": error}
            if isinstance(exc, ApiError):
                if exc.detail is not None:
                    error["detail"] = exc.detail
                body["http_status"] = exc.status
            self.json(body)
            return
        status = f" (HTTP {exc.status})" if isinstance(exc, ApiError) else ""
        self.err.print(f"[bold red]error[/]: {_esc(exc.code)}: {_esc(exc.message)}{status}")
        for line in _detail_lines(exc.detail if isinstance(exc, ApiError) else None):
            self.err.print(f"  {_esc(line)}")


def _esc(text: str) -> str:
    # API text is shown as it is: a "[" in a message is not Rich markup.
    return text.replace("[", r"\[")


def _detail_lines(detail: Any) -> list[str]:
    # validation_failed lists one {field, message} per problem; other details are small objects.
    if isinstance(detail, list):
        return [
            f"{d.get('field', '?')}: {d.get('message', '')}" if isinstance(d, dict) else str(d)
            for d in detail
        ]
    if isinstance(detail, dict):
        return [f"{k}: {v}" for k, v in detail.items()]
    return []


def state_line(entry: dict[str, Any]) -> str:
    """One state change for people: `12:00:01  uploading  (uploader)  fail_reason=...`."""
    at = str(entry.get("at") or "")
    clock = at[11:19] if len(at) >= 19 else at
    source = f"  ({entry['source']})" if entry.get("source") else ""
    detail = entry.get("detail") or {}
    extra = "  " + " ".join(f"{k}={v}" for k, v in detail.items()) if detail else ""
    return _esc(f"{clock}  {entry.get('state')}{source}{extra}".strip())


def upload_summary(view: dict[str, Any]) -> list[str]:
    """An upload for people: what, where, how far, and how it ended."""
    lines = [
        f"request_id: {view.get('request_id')}",
        f"account:    {view.get('account_id')} ({view.get('mode')})",
        f"state:      {view.get('state')}",
    ]
    size, sent = view.get("video_size"), view.get("uploaded_bytes")
    if size:
        lines.append(f"uploaded:   {sent or 0} of {size} bytes")
    if view.get("publish_at"):
        lines.append(f"publish_at: {view['publish_at']}")
    if view.get("publish_id"):
        lines.append(f"publish_id: {view['publish_id']}")
    if view.get("post_ids"):
        lines.append(f"post_ids:   {', '.join(map(str, view['post_ids']))}")
    history = view.get("history") or []
    if history:
        lines.append("history:")
        lines += [f"  {state_line(h)}" for h in history]
    return [_esc(line) if not line.startswith("  ") else line for line in lines]


def uploads_table(items: Iterable[dict[str, Any]]) -> Table:
    """Uploads as a table, newest first (the API's order)."""
    table = Table("request_id", "account", "mode", "state", "updated_at", box=None, pad_edge=False)
    for item in items:
        table.add_row(
            *(
                _esc(str(item.get(k) or ""))
                for k in ("request_id", "account_id", "mode", "state", "updated_at")
            )
        )
    return table


def accounts_table(items: Iterable[dict[str, Any]]) -> Table:
    """Accounts as a table."""
    table = Table("account_id", "status", "scopes", "access_expires_at", box=None, pad_edge=False)
    for item in items:
        scopes = ",".join(item.get("scopes") or [])
        table.add_row(
            _esc(str(item.get("account_id", ""))),
            _esc(str(item.get("status", ""))),
            _esc(scopes),
            _esc(str(item.get("access_expires_at") or "")),
        )
    return table


def account_summary(view: dict[str, Any]) -> list[str]:
    """An account for people; fields the API does not send are left out."""
    lines = [f"account_id: {view.get('account_id')}", f"status:     {view.get('status')}"]
    for key in ("scopes", "missing_scopes"):
        if view.get(key):
            lines.append(f"{key + ':':<11} {', '.join(map(str, view[key]))}")
    for key in ("access_expires_at", "refresh_expires_at"):
        if view.get(key):
            lines.append(f"{key}: {view[key]}")
    creator = view.get("creator_info")
    if isinstance(creator, dict) and creator:
        named = (
            creator.get("creator_nickname") or creator.get("display_name") or creator.get("creator_username")
        )
        if named:
            lines.append(f"creator:    {named}")
        options = creator.get("privacy_level_options")
        if options:
            lines.append(f"privacy:    {', '.join(map(str, options))}")
    return [_esc(line) for line in lines]
