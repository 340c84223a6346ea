"""The `reelay-admin` command (Typer): reads the same settings as ingest (MONGODB_URI, ...)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import typer
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.mongo.client import connect, ensure_indexes

from reelay_ingest.admin import tenants, tokens
from reelay_ingest.settings import IngestSettings

APP_NAME = "reelay-admin"

app = typer.Typer(
    name="reelay-admin",
    help="Administer a Reelay deployment: works on its MongoDB directly, with ingest's settings.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Administer a Reelay deployment (a group of commands, even while it has one)."""


@asynccontextmanager
async def database(settings: IngestSettings) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """The deployment's database, its client closed on exit."""
    client = connect(settings.mongodb_uri.get_secret_value(), app_name=APP_NAME)
    try:
        yield client[settings.mongodb_database]
    finally:
        await client.close()


@app.command()
def indexes() -> None:
    """Create the collections' indexes (every service does so at start; safe to run again)."""

    async def run() -> None:
        async with database(IngestSettings()) as db:
            await ensure_indexes(db)

    asyncio.run(run())
    typer.echo("indexes: ok")


app.add_typer(tokens.app, name="tokens")
app.add_typer(tenants.tenants_app)
app.add_typer(tenants.keys_app)


def main() -> None:
    """Entry point of the `reelay-admin` console script."""
    app()
