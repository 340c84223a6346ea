"""Fault injection (PUT /sandbox/faults, SANDBOX_FAULTS): each fault, reproducibly."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from typing import Any

import httpx
import pytest
from reelay_testing.waiting import eventually
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.integration.sandbox.sandbox_support import (
    FAST,
    Api,
    WebhookReceiver,
    code,
    plan,
    ranges,
    sample,
)

WORKED = plan(50_000_123, 10_000_000)


async def _set(http: httpx.AsyncClient, **faults: Any) -> httpx.Response:
    resp = await http.put("/sandbox/faults", json=faults)
    assert resp.status_code == 200, resp.text
    return resp


async def _start(api: Api, source: dict[str, Any] = WORKED) -> tuple[str, str, bytes]:
    d = (await api.init_direct(source)).json()["data"]
    return d["publish_id"], d["upload_url"], sample(source["video_size"])


class TestChunkFaults:
    async def test_nth_put_answers_5xx_and_stores_nothing(
        self, api: Api, http: httpx.AsyncClient, sandbox: SandboxHandle
    ) -> None:
        await _set(http, put_error_on=[2], put_error_status=502)
        publish_id, url, data = await _start(api)
        (f0, l0), (f1, l1) = ranges(WORKED)[:2]
        assert (await api.put(url, data[f0 : l0 + 1], f0, l0, len(data))).status_code == 206
        failed = await api.put(url, data[f1 : l1 + 1], f1, l1, len(data))
        assert failed.status_code == 502
        assert failed.headers["Content-Range"] == "bytes 0-9999999/50000123"
        retried = await api.put(url, data[f1 : l1 + 1], f1, l1, len(data))  # "retry the same chunk"
        assert retried.status_code == 206
        chunks = (await http.get(f"/sandbox/publishes/{publish_id}")).json()["chunks"]
        assert [(c["order"], c["status_code"], c["stored"], c["fault"]) for c in chunks] == [
            (1, 206, True, None),
            (2, 502, False, "error"),
            (3, 206, True, None),
        ]

    async def test_drop_before_store_loses_the_chunk(self, api: Api, http: httpx.AsyncClient) -> None:
        await _set(http, put_drop_before_store_on=[1])
        publish_id, url, data = await _start(api)
        first, last = ranges(WORKED)[0]
        with pytest.raises(httpx.TransportError):
            await api.put(url, data[first : last + 1], first, last, len(data))
        assert (await api.status(publish_id)).json()["data"]["uploaded_bytes"] == 0
        assert (await api.put(url, data[first : last + 1], first, last, len(data))).status_code == 206

    async def test_drop_after_store_keeps_the_chunk_and_416_proves_it(
        self, api: Api, http: httpx.AsyncClient
    ) -> None:
        await _set(http, put_drop_after_store_on=[1])
        publish_id, url, data = await _start(api)
        first, last = ranges(WORKED)[0]
        with pytest.raises(httpx.TransportError):
            await api.put(url, data[first : last + 1], first, last, len(data))
        assert (await api.status(publish_id)).json()["data"]["uploaded_bytes"] == 10_000_000
        replay = await api.put(url, data[first : last + 1], first, last, len(data))
        assert replay.status_code == 416
        assert replay.headers["Content-Range"] == "bytes 0-9999999/50000123"

    async def test_the_whole_upload_survives_faults_and_hashes_right(
        self, api: Api, http: httpx.AsyncClient
    ) -> None:
        await _set(http, put_error_on=[1], put_drop_before_store_on=[3], put_drop_after_store_on=[5])
        publish_id, url, data = await _start(api)
        for first, last in ranges(WORKED):
            for _ in range(3):
                try:
                    resp = await api.put(url, data[first : last + 1], first, last, len(data))
                except httpx.TransportError:
                    continue
                if resp.status_code in (206, 201, 416):
                    break
        pub = (await http.get(f"/sandbox/publishes/{publish_id}")).json()
        assert pub["complete"] is True
        assert pub["sha256"] == hashlib.sha256(data).hexdigest()

    async def test_rates_with_a_seed_are_reproducible(self) -> None:
        async def fates(seed: int) -> list[str | None]:
            faults = {
                "seed": seed,
                "put_error_rate": 0.3,
                "put_drop_before_store_rate": 0.2,
                "put_drop_after_store_rate": 0.2,
            }
            async with (
                running_sandbox(**FAST, faults=faults) as sb,
                httpx.AsyncClient(base_url=sb.base_url) as http,
            ):
                api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
                data = sample(1_000_000)
                result: list[str | None] = []
                for _ in range(5):
                    publish_id, url, _ = await _start(api, plan(1_000_000))
                    with contextlib.suppress(httpx.TransportError):  # dropped connections are expected
                        await api.put(url, data, 0, 999_999, 1_000_000)
                    result.append(sb.state.publishes[publish_id].chunks[0].fault)
                return result

        first = await fates(7)
        assert first == await fates(7)
        assert set(first) - {None}  # some faults were rolled
        assert first != await fates(8) or first != await fates(9)


class TestCallFaults:
    async def test_rate_limit_burst_then_normal(self, api: Api, http: httpx.AsyncClient) -> None:
        await _set(http, rate_limit_burst={"creator_info": 2})
        assert [(await api.creator_info()).status_code for _ in range(3)] == [429, 429, 200]
        resp = await api.creator_info()
        assert code(resp) == "ok"

    async def test_error_burst_answers_internal_error(self, api: Api, http: httpx.AsyncClient) -> None:
        await _set(http, error_burst={"status_fetch": 1})
        resp = await api.status("v_pub_file~v2-1.1")
        assert (resp.status_code, code(resp)) == (500, "internal_error")
        assert code(await api.status("v_pub_file~v2-1.1")) == "invalid_publish_id"

    async def test_oauth_error_burst_answers_flat_server_error(self, http: httpx.AsyncClient) -> None:
        await _set(http, error_burst={"oauth_token": 1})
        resp = await http.post("/v2/oauth/token/", data={"grant_type": "refresh_token"})
        assert resp.json()["error"] == "server_error"

    async def test_slow_responses(self, api: Api, http: httpx.AsyncClient) -> None:
        await _set(http, delay_seconds={"creator_info": 0.3})
        started = time.monotonic()
        assert (await api.creator_info()).status_code == 200
        assert time.monotonic() - started >= 0.3

    async def test_forced_failure_of_the_next_publish(self, api: Api, http: httpx.AsyncClient) -> None:
        await _set(http, fail_next_publish=["spam_risk_text"])
        failed = await api.publish(sample(2_000_000))
        assert (await api.wait_status(failed, "FAILED"))["fail_reason"] == "spam_risk_text"
        fine = await api.publish(sample(2_000_000))
        assert (await api.wait_status(fine, "PUBLISH_COMPLETE", "FAILED"))["status"] == "PUBLISH_COMPLETE"

    async def test_revoke_a_users_tokens(self) -> None:
        async with (
            WebhookReceiver() as hook,
            running_sandbox(**FAST, webhook_url=hook.url) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            tokens = sb.issue_tokens(sb.default_user.open_id)
            api = Api(http, tokens["access_token"])
            await _set(http, revoke_tokens=[sb.default_user.open_id], revoke_reason=1)
            resp = await api.creator_info()
            assert (resp.status_code, code(resp)) == (401, "access_token_invalid")
            refresh = await http.post(
                "/v2/oauth/token/",
                data={
                    "client_key": "dev-client-key",
                    "client_secret": "dev-client-secret",
                    "grant_type": "refresh_token",
                    "refresh_token": tokens["refresh_token"],
                },
            )
            assert refresh.json()["error"] == "invalid_grant"
            removed = await eventually(lambda: hook.events("authorization.removed"), timeout=5, interval=0.02)
            assert json.loads(removed[0]["content"]) == {"reason": 1}

    async def test_faults_from_settings_apply_at_start(self) -> None:
        async with (
            running_sandbox(**FAST, faults={"rate_limit_burst": {"creator_info": 1}}) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            assert (await api.creator_info()).status_code == 429
            assert (await api.creator_info()).status_code == 200

    async def test_faults_can_be_read_back(self, http: httpx.AsyncClient) -> None:
        await _set(http, rate_limit_burst={"video_init": 2}, put_error_on=[4])
        faults = (await http.get("/sandbox/faults")).json()
        assert faults["rate_limit_burst"] == {"video_init": 2}
        assert faults["put_error_on"] == [4]

    @pytest.mark.parametrize(
        "body",
        [
            {"put_error_rate": 1.5},
            {"put_error_rate": 0.6, "put_drop_after_store_rate": 0.6},
            {"rate_limit_burst": {"nowhere": 1}},
            {"fail_next_publish": ["because"]},
            {"put_error_on": [0]},
            {"unknown_fault": True},
            {"revoke_tokens": ["no-such-user"]},
        ],
    )
    async def test_bad_fault_config_is_refused_and_changes_nothing(
        self, http: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        await _set(http, put_error_on=[9])
        resp = await http.put("/sandbox/faults", json=body)
        assert resp.status_code in (400, 404)
        assert resp.json()["error"]
        assert (await http.get("/sandbox/faults")).json()["put_error_on"] == [9]
