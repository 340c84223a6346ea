"""Runs `reelay` in-process against the fake ingest (cli_fakes.py), with no REELAY_* from outside."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from reelay_cli.app import app
from reelay_cli.commands import Wiring
from typer.testing import CliRunner, Result

from tests.unit.cli.cli_fakes import API_KEY, BASE, FakeIngest, wiring

Run = Callable[..., Result]


@pytest.fixture
def ingest() -> FakeIngest:
    return FakeIngest()


@pytest.fixture
def run(ingest: FakeIngest) -> Run:
    """`run(*args, wiring=..., env=...)`: the CLI's result, configured through REELAY_URL and
    REELAY_API_KEY unless `env` says otherwise. An exception escaping the CLI (what a user would see
    as a traceback) fails the test instead of becoming exit code 1."""

    def invoke(*args: str, wiring_: Wiring | None = None, env: dict[str, str | None] | None = None) -> Result:
        environment: dict[str, str | None] = {"REELAY_URL": BASE, "REELAY_API_KEY": API_KEY, "COLUMNS": "200"}
        environment.update(env or {})
        return CliRunner().invoke(
            app, list(args), env=environment, obj=wiring_ or wiring(ingest), catch_exceptions=False
        )

    return invoke
