"""`make chaos` judges a run from the sandbox's record and Mongo (bench/chaos.py): each check must
catch what it is there to catch, or a green summary line would prove nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.chaos import Planned, Video, backward_histories, duplicates, unexplained


def planned(rid: str, sha: str = "a" * 64) -> Planned:
    return Planned(request_id=rid, account=0, kind="file", video=Video(Path("v.mp4"), 10, sha), start_at=0)


def publish(title: str, *, complete: bool = True, sha: str = "a" * 64, chunks: Any = None) -> dict[str, Any]:
    return {
        "publish_id": f"p-{title}-{complete}",
        "post_info": {"title": title},
        "complete": complete,
        "sha256": sha if complete else None,
        "chunks": chunks if chunks is not None else [{"first": 0, "last": 9, "stored": True}],
    }


def history(*states: str) -> dict[str, Any]:
    return {"state": states[-1], "history": [{"state": s} for s in states]}


def test_one_complete_publish_per_request_is_no_duplicate() -> None:
    by_id = {"r1": planned("r1"), "r2": planned("r2")}
    # An incomplete publish the uploader gave up on (its URL expired) is not a TikTok post.
    pubs = [publish("r1"), publish("r2", complete=False), publish("r2")]
    problems, inits = duplicates(pubs, by_id)
    assert problems == []
    assert inits == {"r1": 1, "r2": 2}


def test_a_request_published_twice_is_a_duplicate() -> None:
    problems, _ = duplicates([publish("r1"), publish("r1")], {"r1": planned("r1")})
    assert problems == ["r1: 2 complete TikTok publishes"]


def test_a_chunk_stored_twice_is_a_duplicate() -> None:
    chunks = [
        {"first": 0, "last": 9, "stored": True},
        {"first": 0, "last": 9, "stored": False},  # a refused replay is fine
        {"first": 0, "last": 9, "stored": True},
    ]
    problems, _ = duplicates([publish("r1", chunks=chunks)], {"r1": planned("r1")})
    assert len(problems) == 1
    assert "a chunk stored twice" in problems[0]


def test_other_bytes_and_foreign_publishes_are_reported() -> None:
    problems, _ = duplicates([publish("r1", sha="b" * 64), publish("stranger")], {"r1": planned("r1")})
    assert any("other bytes" in p for p in problems)
    assert any("no request of this run" in p for p in problems)


def test_forward_histories_pass_and_backward_steps_are_caught() -> None:
    docs = {
        "ok": history("accepted", "uploading", "uploaded", "processing", "published"),
        "corrected": history("accepted", "uploading", "uploaded", "unconfirmed", "published"),
        "back": history("accepted", "uploading", "uploaded", "uploading", "published"),
        "twice": history("accepted", "published", "published"),
        "off": {"state": "published", "history": [{"state": "accepted"}]},
    }
    bad = backward_histories(docs)
    assert sorted(b.split(":")[0] for b in bad) == ["back", "off", "twice"]


def test_a_dead_letter_is_explained_only_by_a_reason_and_a_terminal_request() -> None:
    docs = {"r1": {"state": "published"}, "r2": {"state": "uploading"}}
    letters = [
        {"dlq_topic": "t.dlq", "reason": "invalid_message", "request_id": "r1"},
        {"dlq_topic": "t.dlq", "reason": "invalid_message", "request_id": "r2"},  # not terminal
        {"dlq_topic": "t.dlq", "reason": "", "request_id": "r1"},  # no reason
        {"dlq_topic": "t.dlq", "reason": "undecodable", "request_id": None},  # names nothing
    ]
    assert len(unexplained(letters, docs)) == 3
