"""The e2e token search (tests/e2e/token_audit.py) finds a token wherever it hides: at any depth of a
document, in a key, in bytes, in a log line; and not in its Fernet ciphertext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bson import Binary
from cryptography.fernet import Fernet

from tests.e2e.token_audit import find_in_documents, find_in_files

TOKEN = "act.Zm9vYmFyLWJhei1xdXV4LWEtdGVzdC12YWx1ZQ"  # a test value
OTHER = "rft.c29tZS1vdGhlci10ZXN0LXZhbHVl"  # a test value


class TestFindInDocuments:
    def test_finds_a_token_at_any_depth_and_says_where(self) -> None:
        doc = {"_id": "a1", "history": [{"detail": {"note": f"Bearer {TOKEN}"}}]}

        [found] = find_in_documents([("uploads", doc)], [TOKEN, OTHER])

        assert found.where == "uploads/a1.history[0].detail.note"
        assert TOKEN not in str(found), "the report must not repeat the token"

    def test_finds_a_token_in_bytes_and_in_keys(self) -> None:
        docs: list[tuple[str, dict[str, Any]]] = [
            ("fs.chunks", {"_id": "c1", "data": Binary(b"\x00" + TOKEN.encode() + b"\x00")}),
            ("ledger", {"_id": "l1", "seen": {OTHER: True}}),
        ]

        assert {f.where for f in find_in_documents(docs, [TOKEN, OTHER])} == {
            "fs.chunks/c1.data",
            f"ledger/l1.seen.{OTHER}(key)",
        }

    def test_a_ciphertext_is_not_a_sighting(self) -> None:
        sealed = Fernet(Fernet.generate_key()).encrypt(TOKEN.encode()).decode()

        assert find_in_documents([("accounts", {"_id": "x", "access_token_enc": sealed})], [TOKEN]) == []


class TestFindInFiles:
    def test_names_the_file_and_line(self, tmp_path: Path) -> None:
        log = tmp_path / "ingest.log"
        log.write_text('{"event": "started"}\n{"event": "oops", "token": "' + TOKEN + '"}\n')

        [found] = find_in_files([log], [TOKEN, OTHER])

        assert found.where == "ingest.log:2"
