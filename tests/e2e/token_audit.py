"""Looking for TikTok tokens in clear: every token the sandbox ever issued to the accounts under test,
searched for in every document of the stack's database and in every Reelay service's log.

A flow under test collects tokens as it goes (`TokenLedger.collect` after each step that makes TikTok
issue some: a registration, a refresh, an OAuth connect) and ends with `assert_no_token_in_clear`.
The sandbox's own log is not searched: it stands for TikTok, which may know its tokens."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bson import Binary
from pymongo.asynchronous.database import AsyncDatabase

from tests.e2e.stack import Stack

# Whose logs are searched: Reelay's own processes (the sandbox is TikTok's stand-in).
REELAY_SERVICES = ("ingest", "uploader", "status-poller")


@dataclass
class TokenLedger:
    """Every access and refresh token the sandbox issued to the users of a test, old and new."""

    # Out of the repr: a failing assertion prints its operands, and these are the secrets searched for.
    tokens: set[str] = field(default_factory=set, repr=False)

    async def collect(self, http: httpx.AsyncClient, stack: Stack, open_id: str) -> set[str]:
        """Add every token the sandbox holds for `open_id` (live, used, expired or revoked alike);
        returns the ones not seen before."""
        resp = await http.get(f"{stack.sandbox_url}/sandbox/users/{open_id}/tokens")
        resp.raise_for_status()
        body = resp.json()
        issued = {t["access_token"] for t in body["access_tokens"]} | {
            t["refresh_token"] for t in body["refresh_tokens"]
        }
        fresh = issued - self.tokens
        self.tokens |= issued
        return fresh


@dataclass(frozen=True)
class Sighting:
    """Where a token was found in clear (the token itself left out of the message)."""

    where: str
    token_prefix: str

    def __str__(self) -> str:
        return f"{self.token_prefix}… in {self.where}"


def _texts(value: Any, path: str) -> Iterator[tuple[str, bytes]]:
    """Every string and byte string inside a document, recursively, with its path."""
    if isinstance(value, str):
        yield path, value.encode()
    elif isinstance(value, bytes | bytearray | Binary):
        yield path, bytes(value)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            # A key could hold a token too (a map keyed by token would be a leak as well).
            yield f"{path}.{key}(key)", str(key).encode()
            yield from _texts(inner, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            yield from _texts(inner, f"{path}[{i}]")


def find_in_documents(
    documents: Iterable[tuple[str, Mapping[str, Any]]], tokens: Iterable[str]
) -> list[Sighting]:
    """Each place in (collection, document) pairs where a token appears, in any field at any depth."""
    needles = [(t, t.encode()) for t in tokens]
    found = []
    for collection, doc in documents:
        for path, data in _texts(doc, f"{collection}/{doc.get('_id')!s}"):
            found += [Sighting(path, token[:8]) for token, raw in needles if raw in data]
    return found


def find_in_files(paths: Iterable[Path], tokens: Iterable[str]) -> list[Sighting]:
    """Each file (and line) in which a token appears."""
    needles = [(t, t.encode()) for t in tokens]
    found = []
    for path in paths:
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            found += [Sighting(f"{path.name}:{number}", token[:8]) for token, raw in needles if raw in line]
    return found


async def dump_database(db: AsyncDatabase[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every document of every collection (GridFS chunks, locks and ledgers included)."""
    return [
        (name, doc)
        for name in sorted(await db.list_collection_names())
        for doc in await db[name].find({}).to_list(None)
    ]


async def assert_no_token_in_clear(
    db: AsyncDatabase[dict[str, Any]],
    stack: Stack,
    ledger: TokenLedger,
    *,
    also: Mapping[str, str] | None = None,
) -> set[str]:
    """No token of `ledger` in the database, the Reelay services' logs or the texts of `also`
    (name -> text, e.g. an admin command's output); returns the collections searched."""
    assert ledger.tokens, "no token collected: the search would prove nothing"
    documents = await dump_database(db)
    logs = [stack.services[n].log_path for n in REELAY_SERVICES]
    assert all(p.stat().st_size > 0 for p in logs), "a service log is empty: nothing to search"
    found = find_in_documents(documents, ledger.tokens)
    found += find_in_files(logs, ledger.tokens)
    for name, text in (also or {}).items():
        found += [Sighting(name, t[:8]) for t in ledger.tokens if t in text]
    assert not found, "tokens in clear:\n" + "\n".join(map(str, found))
    return {name for name, _ in documents}
