"""`reelay-admin tokens check|rotate` against the real Mongo-wire server: counts in plain text and
`--json`, exit codes that say whether the rotation is done, no key or token printed. The commands run
in-process (Typer's runner, in a thread of its own: they run their own event loop); one runs as the
process an operator starts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.domain.tiktok import TokenGrant
from reelay_ingest.admin.cli import app
from typer.testing import CliRunner

NEW = Fernet.generate_key().decode()
OLD = Fernet.generate_key().decode()

Db = AsyncDatabase[dict[str, Any]]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def admin_env(db: Db, mongodb_uri: str, keys: str) -> dict[str, str]:
    return {
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": db.name,
        "REELAY_TOKEN_ENCRYPTION_KEYS": keys,
        "REELAY_LOG_FORMAT": "json",
    }


async def admin(db: Db, mongodb_uri: str, *args: str, keys: str) -> Ran:
    """`reelay-admin tokens ARGS` on `db`, with REELAY_TOKEN_ENCRYPTION_KEYS=keys (in-process)."""
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["tokens", *args], env=admin_env(db, mongodb_uri, keys)
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def admin_process(db: Db, mongodb_uri: str, *args: str, keys: str) -> Ran:
    """`python -m reelay_ingest.admin tokens ARGS`: the process an operator runs."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REELAY_", "INGEST_"))},
        **admin_env(db, mongodb_uri, keys),
    }
    out = subprocess.run(  # our own interpreter and module
        [sys.executable, "-m", "reelay_ingest.admin", "tokens", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Ran(out.returncode, out.stdout, out.stderr)


async def seed(db: Db, count: int) -> list[TokenGrant]:
    grants = [
        TokenGrant(
            access_token=f"act.cli-{i}-secret",
            expires_in=3600,
            open_id=f"open-{i}",
            refresh_token=f"rft.cli-{i}-secret",
            refresh_expires_in=86_400,
        )
        for i in range(count)
    ]
    accounts = MongoAccountStore(db, TokenCipher(SecretStr(OLD)))
    for i, g in enumerate(grants):
        await accounts.upsert_tokens(f"cli-{i}", g)
    return grants


def assert_nothing_secret(out: Ran, grants: list[TokenGrant]) -> None:
    text = out.stdout + out.stderr
    for secret in [NEW, OLD, *(g.access_token for g in grants), *(g.refresh_token for g in grants)]:
        assert secret not in text


class TestAdminTokens:
    async def test_check_then_rotate_then_check(self, mongo_db: Db, mongodb_uri: str) -> None:
        grants = await seed(mongo_db, 3)
        both = f"{NEW},{OLD}"

        before = await admin(mongo_db, mongodb_uri, "check", "--json", keys=both)
        assert before.returncode == 1, before.stderr  # not done: tokens under an older key
        assert json.loads(before.stdout)["older"] == 3

        dry = await admin(mongo_db, mongodb_uri, "rotate", "--dry-run", "--json", keys=both)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["rotated"] == 3
        assert (
            json.loads((await admin(mongo_db, mongodb_uri, "check", "--json", keys=both)).stdout)["older"]
            == 3
        )

        rotated = await admin(mongo_db, mongodb_uri, "rotate", "--json", keys=both)
        assert rotated.returncode == 0, rotated.stderr
        assert json.loads(rotated.stdout) == {
            "dry_run": False,
            "rotated": 3,
            "already_current": 0,
            "skipped": 0,
            "undecryptable": 0,
            "no_tokens": 0,
            "conflicts": 0,
            "skipped_accounts": [],
            "undecryptable_accounts": [],
        }

        # The old key can go now: with the new one alone, every account is current.
        after = await admin(mongo_db, mongodb_uri, "check", keys=NEW)
        assert after.returncode == 0, after.stderr
        assert "under the first key: 3" in after.stdout
        process = admin_process(mongo_db, mongodb_uri, "check", "--json", keys=NEW)
        assert process.returncode == 0, process.stderr
        assert json.loads(process.stdout)["current"] == 3
        for out in (before, dry, rotated, after, process):
            assert_nothing_secret(out, grants)

    async def test_a_rotation_without_the_old_key_reports_the_accounts_it_cannot_read(
        self, mongo_db: Db, mongodb_uri: str
    ) -> None:
        grants = await seed(mongo_db, 2)

        out = await admin(mongo_db, mongodb_uri, "rotate", keys=NEW)

        assert out.returncode == 1
        assert "undecryptable (under none of the keys): 2" in out.stdout
        assert "undecryptable: cli-0" in out.stdout
        assert_nothing_secret(out, grants)

    async def test_a_malformed_key_is_a_clear_error_that_does_not_echo_it(
        self, mongo_db: Db, mongodb_uri: str
    ) -> None:
        bad = "definitely-not-a-fernet-key-0123456789"  # a test value

        out = await admin(mongo_db, mongodb_uri, "check", keys=f"{NEW},{bad}")

        assert out.returncode == 2
        assert "REELAY_TOKEN_ENCRYPTION_KEYS entry 2 of 2 must be 32 bytes" in out.stderr
        assert bad not in out.stdout + out.stderr
        assert NEW not in out.stdout + out.stderr
