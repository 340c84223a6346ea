"""`reelay-admin tenants ...` and `reelay-admin keys ...`: a deployment's teams and their API keys
(docs/architecture.md, "Tenants").

A key is printed once, by `keys create`; only its digest is stored, so a lost key is revoked and
replaced, never shown again. Errors print one line on stderr: exit 1 for what the deployment's
state refuses (an unknown or duplicate tenant, an unknown key), 2 for a malformed argument.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from reelay_common.adapters.mongo.tenants import MongoTenantStore
from reelay_common.domain.api_keys import (
    ApiKeyRecord,
    TenantExistsError,
    TenantRecord,
    UnknownApiKeyError,
    UnknownTenantError,
    check_key_id,
)
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.tenancy import check_tenant_id

from reelay_ingest.settings import IngestSettings

T = TypeVar("T")

tenants_app = typer.Typer(name="tenants", help="The teams sharing this deployment.", no_args_is_help=True)
keys_app = typer.Typer(
    name="keys", help="Tenants' API keys (shown once, stored as digests).", no_args_is_help=True
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def _run(work: Callable[[MongoTenantStore], Awaitable[T]]) -> T:
    """Run `work` against the deployment's tenant store; its refusals end the command clearly."""

    # Imported here: cli.py imports this module to register its commands.
    from reelay_ingest.admin.cli import database

    async def run() -> T:
        # No index is needed for these (every service creates them at start: `reelay-admin indexes`).
        async with database(IngestSettings()) as db:
            return await work(MongoTenantStore(db))

    try:
        return asyncio.run(run())
    except (UnknownTenantError, TenantExistsError, UnknownApiKeyError) as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc), code=1)
    except ValueError as exc:  # a bad name or label, refused by the store
        _fail(str(exc), code=2)
    except RetryableError as exc:  # MongoDB did not answer
        _fail(f"the database did not answer ({exc.message}); try again", code=1)


def _fail(message: str, *, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    """A Typer callback refusing a malformed argument with the check's own message (exit 2)."""

    def callback(value: str) -> str:
        try:
            return check(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc

    return callback


TenantArg = Annotated[str, typer.Argument(help="The tenant's id.", callback=_checked(check_tenant_id))]
KeyIdArg = Annotated[
    str, typer.Argument(help="The key's id (the part after rly_).", callback=_checked(check_key_id))
]


def _dump(model: BaseModel, *, exclude: set[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = model.model_dump(mode="json", exclude=exclude)
    return out


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def _key_line(key: ApiKeyRecord) -> str:
    state = f"revoked {key.revoked_at.isoformat()}" if key.revoked_at is not None else "active"
    return f"{key.key_id}  {key.tenant_id}  {state}  created {key.created_at.isoformat()}  {key.label or ''}"


# ----------------------------------------------------------------------------------------- tenants


@tenants_app.command("create")
def create_tenant(
    tenant_id: TenantArg,
    name: Annotated[str | None, typer.Option("--name", help="A name for people.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a tenant (then give it a key: `reelay-admin keys create ID`)."""
    record: TenantRecord = _run(lambda store: store.create_tenant(tenant_id, name=name))
    if as_json:
        _print_json(_dump(record))
    else:
        typer.echo(f"tenant {record.tenant_id}: created")


@tenants_app.command("list")
def list_tenants(as_json: JsonOption = False) -> None:
    """Every tenant (the default one, which owns INGEST_API_KEYS, first)."""
    records = _run(lambda store: store.list_tenants())
    if as_json:
        _print_json([_dump(r) for r in records])
        return
    for r in records:
        typer.echo(f"{r.tenant_id}  {r.name or ''}".rstrip())


# -------------------------------------------------------------------------------------------- keys


@keys_app.command("create")
def create_key(
    tenant_id: TenantArg,
    label: Annotated[str | None, typer.Option("--label", help="What the key is for.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a new API key for a tenant and print it. It is shown this once: store it now."""
    record, new = _run(lambda store: store.create_key(tenant_id, label=label))
    if as_json:
        _print_json({**_dump(record, exclude={"digest"}), "key": new.key})
        return
    typer.echo(new.key)
    typer.echo(
        f"key {record.key_id} of tenant {record.tenant_id}: shown once, only its digest is kept; "
        "use it as Authorization: Bearer <key>",
        err=True,
    )


@keys_app.command("list")
def list_keys(tenant_id: TenantArg, as_json: JsonOption = False) -> None:
    """A tenant's keys, revoked ones too (ids, labels and dates; never a secret)."""
    records = _run(lambda store: store.list_keys(tenant_id))
    if as_json:
        _print_json([_dump(r, exclude={"digest"}) for r in records])
        return
    for r in records:
        typer.echo(_key_line(r))


@keys_app.command("revoke")
def revoke_key(key_id: KeyIdArg, as_json: JsonOption = False) -> None:
    """Revoke a key: refused from then on (within INGEST_API_KEY_CACHE_SECONDS on a running ingest)."""
    record = _run(lambda store: store.revoke_key(key_id))
    if as_json:
        _print_json(_dump(record, exclude={"digest"}))
    else:
        typer.echo(f"key {record.key_id} of tenant {record.tenant_id}: revoked")
