"""A file upload whose request fails after its document was stored keeps its file.

Found by `make chaos` (bench/chaos.py): FerretDB stalled while ingest settled the outbox of a file
upload it had just stored and queued; the request answered 503 and deleted the file, the client's
resend was a replay (202), and the uploader then failed the upload `blob_not_found`.
"""

from __future__ import annotations

from typing import Any

import pytest
from reelay_common.domain.errors import DatabaseUnavailableError
from reelay_common.domain.messages import BlobSource
from reelay_common.domain.states import UploadState

from tests.unit.ingest.ingest_fakes import IngestApp, inbox_fields, mp4_bytes


def mongo_lost_once_in(ingest: IngestApp, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """The upload store's `method` raises what the Mongo adapter raises on a lost server, once."""
    real = getattr(ingest.uploads, method)
    failed = False

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal failed
        if not failed:
            failed = True
            raise DatabaseUnavailableError("server selection timed out")
        return await real(*args, **kwargs)

    monkeypatch.setattr(ingest.uploads, method, flaky)


async def test_mongo_lost_after_the_upload_was_stored_keeps_its_file(
    ingest: IngestApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    mongo_lost_once_in(ingest, monkeypatch, "settle_outbox")
    data = mp4_bytes(200_000)

    failed = await ingest.post_file(data, fields=inbox_fields(request_id="f-1"))

    assert failed.status_code == 503
    record = await ingest.uploads.get("f-1")
    assert record is not None
    assert isinstance(record.source, BlobSource)
    assert ingest.blobs.blobs[record.source.blob_id][0] == data, "the stored upload's file was deleted"
    # The client's resend is a replay of that upload, and only its first copy is kept.
    again = await ingest.post_file(data, fields=inbox_fields(request_id="f-1"))
    assert again.status_code == 202
    assert again.json()["replayed"] is True
    assert list(ingest.blobs.blobs) == [record.source.blob_id]
    assert record.state is UploadState.ACCEPTED


async def test_mongo_lost_before_the_upload_was_stored_leaves_no_file(
    ingest: IngestApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    mongo_lost_once_in(ingest, monkeypatch, "create")

    failed = await ingest.post_file(mp4_bytes(200_000), fields=inbox_fields(request_id="f-2"))

    assert failed.status_code == 503
    assert await ingest.uploads.get("f-2") is None
    assert ingest.blobs.blobs == {}, "a file no upload names was left behind"
