"""Kafka messages validate at the edge: bad input is refused with an error that names the problem."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from reelay_common.domain.messages import (
    PUBLISH_EVENT_ADAPTER,
    DeadLetter,
    PostInfo,
    PullFromUrlSource,
    UploadRequested,
    UrlSource,
    VideoUploaded,
)


def direct(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": "req-1",
        "account_id": "acct-1",
        "mode": "direct",
        "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
        "post_info": {"privacy_level": "SELF_ONLY", "title": "hello"},
    }
    base.update(overrides)
    return base


def errors_of(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return json.dumps(exc.value.errors(include_url=False, include_input=False), default=str)


class TestUploadRequested:
    def test_accepts_a_direct_post_with_post_info(self) -> None:
        msg = UploadRequested.model_validate(direct())
        assert msg.post_info is not None
        assert msg.post_info.privacy_level == "SELF_ONLY"
        assert msg.requested_at.tzinfo is not None

    def test_accepts_an_inbox_upload_without_post_info(self) -> None:
        msg = UploadRequested.model_validate(direct(mode="inbox", post_info=None))
        assert msg.mode == "inbox"

    def test_round_trips_through_json(self) -> None:
        msg = UploadRequested.model_validate(direct())
        assert UploadRequested.model_validate_json(msg.model_dump_json()) == msg

    def test_refuses_direct_without_post_info(self) -> None:
        with pytest.raises(ValidationError) as exc:
            UploadRequested.model_validate(direct(post_info=None))
        assert "post_info (with privacy_level) is required when mode is 'direct'" in errors_of(exc)

    def test_refuses_inbox_with_post_info(self) -> None:
        with pytest.raises(ValidationError) as exc:
            UploadRequested.model_validate(direct(mode="inbox"))
        assert "post_info is only for mode 'direct'" in errors_of(exc)

    @pytest.mark.parametrize("bad", ["", "has space", "-leading-dash", "a/b", "x" * 129, "é"])
    def test_refuses_a_bad_request_id(self, bad: str) -> None:
        with pytest.raises(ValidationError) as exc:
            UploadRequested.model_validate(direct(request_id=bad))
        assert exc.value.errors()[0]["loc"] == ("request_id",)

    def test_refuses_an_unknown_mode(self) -> None:
        with pytest.raises(ValidationError) as exc:
            UploadRequested.model_validate(direct(mode="draft"))
        assert exc.value.errors()[0]["loc"] == ("mode",)

    def test_refuses_a_non_http_url(self) -> None:
        with pytest.raises(ValidationError) as exc:
            UploadRequested.model_validate(direct(source={"kind": "url", "url": "file:///etc/passwd"}))
        assert exc.value.errors()[0]["loc"][:2] == ("source", "url")

    def test_refuses_an_unknown_source_kind(self) -> None:
        with pytest.raises(ValidationError) as exc:
            UploadRequested.model_validate(direct(source={"kind": "ftp", "url": "ftp://x"}))
        assert "source" in errors_of(exc)

    def test_refuses_malformed_json(self) -> None:
        with pytest.raises(ValidationError) as exc:
            UploadRequested.model_validate_json(b"{not json")
        assert exc.value.errors()[0]["type"] == "json_invalid"

    def test_ignores_unknown_fields_so_producers_may_be_newer(self) -> None:
        msg = UploadRequested.model_validate(direct(future_field="x"))
        assert not hasattr(msg, "future_field")

    def test_is_immutable(self) -> None:
        msg = UploadRequested.model_validate(direct())
        with pytest.raises(ValidationError):
            msg.account_id = "other"  # type: ignore[misc]  # frozen: the assignment itself is under test


class TestPostInfo:
    def test_accepts_a_title_of_exactly_2200_utf16_units(self) -> None:
        assert PostInfo(privacy_level="SELF_ONLY", title="a" * 2200).title is not None

    def test_refuses_a_title_longer_than_2200_utf16_units(self) -> None:
        with pytest.raises(ValidationError) as exc:
            PostInfo(privacy_level="SELF_ONLY", title="a" * 2201)
        assert "title is longer than 2200 UTF-16 code units" in errors_of(exc)

    def test_counts_emoji_as_two_utf16_units(self) -> None:
        with pytest.raises(ValidationError):
            PostInfo(privacy_level="SELF_ONLY", title="😀" * 1101)

    def test_refuses_an_unknown_privacy_level(self) -> None:
        with pytest.raises(ValidationError) as exc:
            PostInfo.model_validate({"privacy_level": "EVERYONE"})
        assert exc.value.errors()[0]["loc"] == ("privacy_level",)

    def test_refuses_branded_content_that_is_private(self) -> None:
        with pytest.raises(ValidationError) as exc:
            PostInfo(privacy_level="SELF_ONLY", brand_content_toggle=True)
        assert "branded content cannot be posted with privacy_level SELF_ONLY" in errors_of(exc)


class TestPublishEvents:
    def test_decodes_by_type(self) -> None:
        raw = VideoUploaded(request_id="r", account_id="a", publish_id="p", mode="inbox").model_dump_json()
        assert isinstance(PUBLISH_EVENT_ADAPTER.validate_json(raw), VideoUploaded)

    def test_refuses_an_unknown_type(self) -> None:
        with pytest.raises(ValidationError):
            PUBLISH_EVENT_ADAPTER.validate_json(b'{"type": "nope"}')


class TestDeadLetter:
    def test_carries_where_the_record_came_from(self) -> None:
        letter = DeadLetter(topic="t", partition=2, offset=7, value="x", reason="invalid_json", error="bad")
        back = DeadLetter.model_validate_json(letter.model_dump_json())
        assert (back.topic, back.partition, back.offset, back.reason) == ("t", 2, 7, "invalid_json")


class TestSourceUrls:
    @pytest.mark.parametrize(
        "url", ["https:///v.mp4", "https://", "http:///x", "https:// space.example/v.mp4"]
    )
    def test_a_url_without_a_host_is_refused(self, url: str) -> None:
        with pytest.raises(ValidationError):
            UrlSource(url=url)
        with pytest.raises(ValidationError):
            PullFromUrlSource(url=url)

    def test_a_plain_https_url_is_accepted(self) -> None:
        assert PullFromUrlSource(url="https://media.example.com/v.mp4").url.endswith("v.mp4")
        assert UrlSource(url="http://media.example.com:8080/v.mp4").kind == "url"
