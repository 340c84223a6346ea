"""Specification of `reelay-admin tenants` and `reelay-admin keys`, run as an operator would, on a
real Mongo-wire server (docs/architecture.md, "Tenants")."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from reelay_common.domain.api_keys import key_digest
from reelay_ingest.admin.cli import app
from typer.testing import CliRunner, Result


@pytest.fixture
def admin_db(mongodb_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database[dict[str, Any]]]:
    """A fresh database the commands work on (through MONGODB_URI / MONGODB_DATABASE), dropped after."""
    name = f"reelay_admin_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("MONGODB_DATABASE", name)
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, tz_aware=True)
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


def admin(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_a_tenant_is_created_and_listed(admin_db: Database[dict[str, Any]]) -> None:
    done = admin("tenants", "create", "team-a", "--name", "Team A")
    assert (done.exit_code, done.stdout) == (0, "tenant team-a: created\n")
    listed = admin("tenants", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [(t["tenant_id"], t["name"]) for t in json.loads(listed.stdout)] == [
        ("default", "default (INGEST_API_KEYS)"),
        ("team-a", "Team A"),
    ]
    assert admin_db["tenants"].count_documents({}) == 1


def test_a_duplicate_tenant_a_bad_id_and_an_unknown_tenant_are_refused_clearly(
    admin_db: Database[dict[str, Any]],
) -> None:
    assert admin("tenants", "create", "team-a").exit_code == 0
    again = admin("tenants", "create", "team-a")
    assert (again.exit_code, again.stderr) == (1, "error: tenant 'team-a' exists already\n")
    bad = admin("tenants", "create", "Team_A")
    assert bad.exit_code == 2
    assert "tenant id 'Team_A' is not valid" in bad.stderr
    unknown = admin("keys", "create", "nobody")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: no tenant 'nobody'")
    assert admin("keys", "list", "nobody").exit_code == 1
    assert admin_db["api_keys"].count_documents({}) == 0
    assert admin_db["tenants"].count_documents({}) == 1


def test_a_key_is_printed_once_and_stored_as_its_digest_only(admin_db: Database[dict[str, Any]]) -> None:
    admin("tenants", "create", "team-a")
    made = admin("keys", "create", "team-a", "--label", "ci")
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("rly_")
    assert "shown once" in made.stderr
    [doc] = admin_db["api_keys"].find({})
    assert doc["digest"] == key_digest(key)
    assert key not in repr(doc)
    assert key.split("_", 2)[2] not in repr(doc)
    # Never shown again: the listing names the key by its id only.
    listed = admin("keys", "list", "team-a")
    assert listed.exit_code == 0
    assert doc["_id"] in listed.stdout
    assert "active" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout
    as_json = json.loads(admin("keys", "list", "team-a", "--json").stdout)
    assert [(k["key_id"], k["label"], k["revoked_at"]) for k in as_json] == [(doc["_id"], "ci", None)]
    assert "digest" not in as_json[0]


def test_create_key_json_gives_the_key_and_its_id(admin_db: Database[dict[str, Any]]) -> None:
    admin("tenants", "create", "team-a")
    made = admin("keys", "create", "team-a", "--json")
    assert made.exit_code == 0, made.output
    body = json.loads(made.stdout)
    assert body["key"].startswith(f"rly_{body['key_id']}_")
    assert body["tenant_id"] == "team-a"
    assert "digest" not in body


def test_a_key_is_revoked_once_and_an_unknown_key_id_is_refused(admin_db: Database[dict[str, Any]]) -> None:
    admin("tenants", "create", "team-a")
    key_id = json.loads(admin("keys", "create", "team-a", "--json").stdout)["key_id"]
    revoked = admin("keys", "revoke", key_id)
    assert (revoked.exit_code, revoked.stdout) == (0, f"key {key_id} of tenant team-a: revoked\n")
    first = admin_db["api_keys"].find_one({"_id": key_id})
    assert first is not None
    assert first["revoked_at"] is not None
    assert admin("keys", "revoke", key_id).exit_code == 0  # idempotent
    assert admin_db["api_keys"].find_one({"_id": key_id}) == first
    assert "revoked" in admin("keys", "list", "team-a").stdout
    unknown = admin("keys", "revoke", "0" * 16)
    assert (unknown.exit_code, unknown.stderr) == (1, f"error: no API key '{'0' * 16}'\n")
    malformed = admin("keys", "revoke", "nope")
    assert malformed.exit_code == 2
    assert "key id 'nope' is not valid" in malformed.stderr
