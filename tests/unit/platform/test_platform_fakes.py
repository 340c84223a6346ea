"""The fakes of reelay_testing behave like the ports they stand for (the store's own contract suite runs in
tests/integration/platform against the fake and Mongo alike)."""

from __future__ import annotations

import pytest
from reelay_common.domain.errors import AuthExpiredError, InvalidInputError, RetryableError
from reelay_common.domain.messages import UploadRequested
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import TokenGrant
from reelay_testing.blobs import FakeBlobStore
from reelay_testing.publisher import FakePublisher
from reelay_testing.readers import BytesVideoReader, aiter_bytes
from reelay_testing.stores import FakeAccountStore, FakeUploadStore
from reelay_testing.tokens import FakeRateLimiter, FakeTokenProvider


async def read(reader: BytesVideoReader, offset: int, length: int) -> list[bytes]:
    return [piece async for piece in reader.stream(offset, length)]


class TestBytesVideoReader:
    async def test_streams_exactly_the_range_in_bounded_pieces(self) -> None:
        data = bytes(range(256)) * 10
        reader = BytesVideoReader(data, piece_size=100)
        pieces = await read(reader, 50, 1000)
        assert b"".join(pieces) == data[50:1050]
        assert max(len(p) for p in pieces) <= 100
        assert reader.reads == [(50, 1000)]
        assert (reader.size, reader.content_type) == (2560, "video/mp4")

    @pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, 11), (5, -1), (10, 1)])
    async def test_refuses_a_range_outside_the_data(self, offset: int, length: int) -> None:
        with pytest.raises(ValueError, match="outside a file of 10 bytes"):
            await read(BytesVideoReader(b"0123456789"), offset, length)

    async def test_an_empty_range_yields_nothing(self) -> None:
        assert await read(BytesVideoReader(b"abc"), 3, 0) == []


class TestFakePublisher:
    async def test_remembers_what_was_sent(self) -> None:
        pub = FakePublisher()
        cmd = UploadRequested.model_validate(
            {
                "request_id": "r",
                "account_id": "a",
                "mode": "inbox",
                "source": {"kind": "url", "url": "https://x.io/a"},
            }
        )
        await pub.publish("t1", cmd, key="a")
        assert pub.sent == [("t1", cmd, "a")]
        assert pub.messages("t1", UploadRequested) == [cmd]
        assert pub.messages("t2") == []

    async def test_raises_queued_failures_once_each(self) -> None:
        pub = FakePublisher()
        pub.fail_with.append(RetryableError("down"))
        cmd = UploadRequested.model_validate(
            {
                "request_id": "r",
                "account_id": "a",
                "mode": "inbox",
                "source": {"kind": "url", "url": "https://x.io/a"},
            }
        )
        with pytest.raises(RetryableError):
            await pub.publish("t", cmd, key="a")
        await pub.publish("t", cmd, key="a")
        assert len(pub.sent) == 1


class TestTokenAndLimiterFakes:
    async def test_fixed_token_provider_hands_out_its_token_and_counts_refreshes(self) -> None:
        tokens = FakeTokenProvider("act.x")
        assert await tokens.access_token("a") == "act.x"
        assert await tokens.force_refresh("a", "act.old") == "act.x"
        assert tokens.refreshes == [("a", "act.old")]

    async def test_fixed_token_provider_refuses_accounts_it_does_not_know(self) -> None:
        tokens = FakeTokenProvider(accounts=["a"])
        with pytest.raises(AuthExpiredError):
            await tokens.access_token("b")

    async def test_noop_rate_limiter_records_calls(self) -> None:
        limiter = FakeRateLimiter()
        await limiter.acquire("a", "init")
        await limiter.acquire("a", "status")
        assert limiter.calls == [("a", "init"), ("a", "status")]


class TestFakeAccountStore:
    async def test_upserts_tokens_without_keeping_them_in_the_record(self) -> None:
        accounts = FakeAccountStore()
        record = await accounts.upsert_tokens(
            "a",
            TokenGrant(
                open_id="o",
                access_token="act.secret",
                expires_in=86400,
                refresh_token="rft.secret",
                refresh_expires_in=31536000,
                scope="video.publish",
            ),
        )
        assert (record.account_id, record.open_id, record.scopes, record.token_version) == (
            "a",
            "o",
            ["video.publish"],
            1,
        )
        assert "secret" not in record.model_dump_json()
        assert accounts.tokens["a"] == ("act.secret", "rft.secret")
        again = await accounts.upsert_tokens(
            "a",
            TokenGrant(
                open_id="o", access_token="2", expires_in=1, refresh_token="3", refresh_expires_in=1, scope=""
            ),
        )
        assert again.token_version == 2
        assert again.created_at == record.created_at

    async def test_add_connected_is_a_shortcut_for_tests(self) -> None:
        accounts = FakeAccountStore()
        accounts.add_connected("a")
        record = await accounts.get("a")
        assert record is not None
        assert record.status == "connected"
        assert await accounts.get("b") is None


class TestFakeUploadStore:
    async def test_returns_copies_so_callers_cannot_change_stored_state(self) -> None:
        store = FakeUploadStore()
        cmd = UploadRequested.model_validate(
            {
                "request_id": "r",
                "account_id": "a",
                "mode": "inbox",
                "source": {"kind": "url", "url": "https://x.io/a"},
            }
        )
        record, _ = await store.create(cmd, source="ingest")
        record.history.clear()
        fetched = await store.get("r")
        assert fetched is not None
        assert len(fetched.history) == 1
        assert fetched.state is UploadState.ACCEPTED


class TestFakeBlobStore:
    async def test_round_trips_and_caps(self) -> None:
        blobs = FakeBlobStore()
        source = await blobs.save(
            aiter_bytes(b"x" * 10, 3), filename="a.mp4", content_type="video/mp4", max_bytes=10
        )
        reader = await blobs.open(source)
        assert b"".join(await read(reader, 0, 10)) == b"x" * 10
        with pytest.raises(InvalidInputError) as exc:
            await blobs.save(aiter_bytes(b"x" * 11, 3), filename=None, content_type="video/mp4", max_bytes=10)
        assert exc.value.code == "too_large"
        assert list(blobs.blobs) == [source.blob_id]
