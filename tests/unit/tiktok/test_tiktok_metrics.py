"""The TikTok client's metrics: calls by endpoint and outcome (TikTok's error code), their latency,
and the bytes TikTok acknowledged; label values are endpoints and codes, never ids."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY
from reelay_common.adapters.tiktok.client import PATH_CREATOR_INFO
from reelay_common.domain.errors import ReelayError

from tests.unit.tiktok.tiktok_fakes import UPLOAD_URL, envelope, json_response, make_client

ACCESS = "act.metrics-access-token"  # a test value


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_counts_calls_by_endpoint_and_outcome_and_times_them() -> None:
    answers = iter([envelope("ok", data={}), envelope("scope_not_authorized")])

    async def handler(request: httpx.Request) -> httpx.Response:
        body = next(answers)
        return json_response(200 if body["error"]["code"] == "ok" else 401, body)

    ok_before = sample("reelay_tiktok_requests_total", endpoint=PATH_CREATOR_INFO, outcome="ok")
    refused_before = sample(
        "reelay_tiktok_requests_total", endpoint=PATH_CREATOR_INFO, outcome="scope_not_authorized"
    )
    timed_before = sample("reelay_tiktok_request_duration_seconds_count", endpoint=PATH_CREATOR_INFO)
    client, http = make_client(handler)
    async with http:
        # An empty creator_info may not parse; the call itself was still answered "ok".
        with contextlib.suppress(ReelayError):
            await client.creator_info(ACCESS)
        with pytest.raises(ReelayError):
            await client.creator_info(ACCESS)
    assert sample("reelay_tiktok_requests_total", endpoint=PATH_CREATOR_INFO, outcome="ok") == ok_before + 1
    assert (
        sample("reelay_tiktok_requests_total", endpoint=PATH_CREATOR_INFO, outcome="scope_not_authorized")
        == refused_before + 1
    )
    assert (
        sample("reelay_tiktok_request_duration_seconds_count", endpoint=PATH_CREATOR_INFO) == timed_before + 2
    )


async def test_counts_the_bytes_tiktok_acknowledged_and_not_the_refused_ones() -> None:
    statuses = iter([206, 500])

    async def handler(request: httpx.Request) -> httpx.Response:
        async for _ in request.stream:  # type: ignore[union-attr]  # an async body
            pass
        return httpx.Response(next(statuses), headers={"Content-Range": "bytes 0-9/100"})

    before = sample("reelay_tiktok_uploaded_bytes_total")
    failed_before = sample("reelay_tiktok_requests_total", endpoint="video_upload", outcome="server_error")
    client, http = make_client(handler)
    async with http:
        await client.put_chunk(
            UPLOAD_URL, first=0, last=9, total=100, content_type="video/mp4", body=one_piece(b"x" * 10)
        )
        with pytest.raises(ReelayError):
            await client.put_chunk(
                UPLOAD_URL, first=10, last=19, total=100, content_type="video/mp4", body=one_piece(b"y" * 10)
            )
    assert sample("reelay_tiktok_uploaded_bytes_total") == before + 10
    assert (
        sample("reelay_tiktok_requests_total", endpoint="video_upload", outcome="server_error")
        == failed_before + 1
    )
