"""UploadRecord is the one definition of the `uploads` document: a new one, and what callers may set."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from reelay_common.adapters.mongo.uploads import check_settable, new_upload_document
from reelay_common.domain.messages import UploadRequested
from reelay_common.domain.records import UploadRecord

NOW = datetime(2030, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)

# The document every Reelay version so far has inserted for a new upload, key for key and in order.
STORED_KEYS = [
    "_id",
    "account_id",
    "tenant_id",  # the default tenant's, stored with keys unchanged (docs/architecture.md, "Tenants")
    "mode",
    "source",
    "post_info",
    "publish_at",
    "callback_url",
    "requested_at",
    "state",
    "history",
    "created_at",
    "updated_at",
    "publish_id",
    "upload_url",
    "upload_url_expires_at",
    "video_size",
    "chunk_size",
    "total_chunk_count",
    "uploaded_bytes",
    "init_attempts",
    "retrying_since",
    "post_ids",
    "poll_next_at",
    "poll_attempts",
    "poll_lease_until",
    "tracking_started_at",
    "poll_last_at",
    "trace_context",
    "callbacks",
    "outbox",
    "outbox_due_at",
    "outbox_lease_until",
]


def direct_request() -> UploadRequested:
    return UploadRequested.model_validate(
        {
            "request_id": "req-1",
            "account_id": "acct-1",
            "mode": "direct",
            "source": {"kind": "blob", "blob_id": "b-1", "size": 10},
            "post_info": {"privacy_level": "SELF_ONLY", "title": "t"},
            "requested_at": "2030-01-01T11:59:59.987654Z",
        }
    )


class TestNewDocument:
    def test_has_the_stored_layout_with_plain_values(self) -> None:
        doc = new_upload_document(direct_request(), source="ingest", now=NOW)
        assert list(doc) == STORED_KEYS
        assert (doc["_id"], doc["mode"], doc["state"]) == ("req-1", "direct", "accepted")
        assert type(doc["state"]) is str
        assert doc["source"] == {
            "kind": "blob",
            "blob_id": "b-1",
            "size": 10,
            "content_type": "video/mp4",
            "filename": None,
            "store": None,  # absent: a message from before the blob stores (GridFS)
            "sha256": None,
        }
        assert doc["post_info"]["privacy_level"] == "SELF_ONLY"
        assert doc["history"] == [{"state": "accepted", "at": NOW, "source": "ingest", "detail": {}}]
        assert (doc["created_at"], doc["updated_at"], doc["uploaded_bytes"], doc["post_ids"]) == (
            NOW,
            NOW,
            0,
            [],
        )

    def test_keeps_requested_at_at_the_precision_bson_stores(self) -> None:
        doc = new_upload_document(direct_request(), source="ingest", now=NOW)
        assert doc["requested_at"] == datetime(2030, 1, 1, 11, 59, 59, 987000, tzinfo=UTC)
        assert UploadRecord.model_validate(doc).requested_at == doc["requested_at"]


class TestSettableFields:
    def test_the_store_keeps_its_own_bookkeeping(self) -> None:
        for field in (
            "_id",
            "request_id",
            "state",
            "history",
            "created_at",
            "updated_at",
            "requested_at",
            "outbox",
            "outbox_due_at",
            "outbox_lease_until",
        ):
            with pytest.raises(ValueError, match="managed by the store"):
                check_settable({field: None})

    def test_every_other_field_of_the_record_may_be_set(self) -> None:
        check_settable({"publish_id": "p", "user_posted_draft_at": NOW, "poll_attempts": 2})
        with pytest.raises(ValueError, match="unknown upload fields"):
            check_settable({"publish_idd": "p"})
