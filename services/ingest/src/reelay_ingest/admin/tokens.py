"""`reelay-admin tokens`: which key the stored TikTok tokens are under, and their re-encryption under
the first of REELAY_TOKEN_ENCRYPTION_KEYS (README "Rotating the token key").

Exit codes: 0 done (`check`: every token under the first key); 1 not done (`rotate`: accounts
skipped after concurrent writes, or undecryptable; `check`: accounts under an older key or none);
2 the settings are refused. Output carries counts and account ids, never a token or a key."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.token_keys import MongoTokenKeys
from reelay_common.logging import configure_logging

from reelay_ingest.settings import IngestSettings

T = TypeVar("T")
APP = "reelay-admin tokens"

app = typer.Typer(
    name="tokens",
    help="The stored TikTok tokens: which key encrypts them, and their re-encryption.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")]


def _settings() -> IngestSettings:
    """Ingest's settings; a refused setting is an error message and exit 2, not a traceback."""
    try:
        settings = IngestSettings()
    except ValidationError as exc:
        # hide_input_in_errors (CommonSettings): the messages name settings, never their values.
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            typer.echo(f"{APP}: {where + ': ' if where else ''}{message}", err=True)
        raise typer.Exit(2) from None
    # Logs go to stderr: stdout is the report (and `--json` must parse).
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    return settings


async def _with_keys(settings: IngestSettings, run: Callable[[MongoTokenKeys], Awaitable[T]]) -> T:
    """`run` on the deployment's accounts, with the configured keys."""
    # Imported here: cli imports this module to register the group (cli.app.add_typer).
    from reelay_ingest.admin.cli import database

    async with database(settings) as db:
        return await run(MongoTokenKeys(db, TokenCipher(settings.token_keys())))


def _print(report: dict[str, Any], lines: list[str], *, as_json: bool) -> None:
    typer.echo(json.dumps(report, sort_keys=True) if as_json else "\n".join(lines))


@app.command()
def rotate(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be re-encrypted; write nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-encrypt every stored token under the first key (safe while the services run; idempotent)."""
    settings = _settings()
    report = asyncio.run(_with_keys(settings, lambda keys: keys.rotate(dry_run=dry_run)))
    verb = "would rotate" if dry_run else "rotated"
    lines = [
        f"{verb}: {report.rotated}",
        f"already current: {report.current}",
        f"skipped (changed while rotating; run again): {report.skipped}",
        f"undecryptable (under none of the keys): {report.undecryptable}",
        f"without tokens: {report.no_tokens}",
    ]
    lines += [f"  skipped: {a}" for a in report.skipped_accounts]
    lines += [f"  undecryptable: {a}" for a in report.undecryptable_accounts]
    _print(report.as_json(), lines, as_json=as_json)
    if not report.complete:
        raise typer.Exit(1)


@app.command()
def check(as_json: JsonOption = False) -> None:
    """Count the accounts whose tokens are under the first key, an older key, or none of them."""
    settings = _settings()
    report = asyncio.run(_with_keys(settings, lambda keys: keys.check()))
    lines = [
        f"keys configured: {report.keys}",
        f"under the first key: {report.current}",
        f"under an older key: {report.older}",
        *(f"  needing key {k}: {n}" for k, n in sorted(report.older_by_key.items())),
        f"under none of the keys: {report.undecryptable}",
        f"without tokens: {report.no_tokens}",
        *(f"  undecryptable: {a}" for a in report.undecryptable_accounts),
    ]
    _print(report.as_json(), lines, as_json=as_json)
    if report.older or report.undecryptable:
        raise typer.Exit(1)
