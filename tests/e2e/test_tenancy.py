"""Specification of tenancy on the whole stack (real Kafka, FerretDB, the sandbox): tenant A's key can
read, list, post for or cancel nothing of tenant B's, over HTTP and over Kafka, and two tenants'
equal ids are two uploads that both reach `published` (docs/architecture.md, "Tenants")."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.domain.messages import DeadLetter, UploadRequested, UrlSource, dlq_topic
from reelay_common.domain.tenancy import scoped
from reelay_testing.kafka import TopicRecord, read_topic
from tiktok_sandbox.media import write_sample_mp4

from tests.e2e.stack import Stack, wait_for_upload_state

VIDEO_BYTES = 300_000


async def admin(stack: Stack, *args: str) -> str:
    """`reelay-admin ARGS` as an operator runs it against the stack's database; its stdout."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reelay_ingest.admin", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def new_tenant(stack: Stack) -> tuple[str, dict[str, str]]:
    """A tenant made with reelay-admin and the Authorization header of a key made for it."""
    tenant_id = f"team-{uuid.uuid4().hex[:8]}"
    await admin(stack, "tenants", "create", tenant_id)
    key = json.loads(await admin(stack, "keys", "create", tenant_id, "--json"))["key"]
    return tenant_id, {"Authorization": f"Bearer {key}"}


async def connect(http: httpx.AsyncClient, stack: Stack, auth: dict[str, str], account_id: str) -> str:
    """A new sandbox creator registered as `account_id` with the key `auth`; its open_id."""
    resp = await http.post(
        f"{stack.sandbox_url}/sandbox/users", json={"username": f"t-{uuid.uuid4().hex[:8]}"}
    )
    resp.raise_for_status()
    open_id = str(resp.json()["open_id"])
    tokens = (await http.post(f"{stack.sandbox_url}/sandbox/users/{open_id}/tokens")).json()
    resp = await http.post(
        f"{stack.ingest_url}/v1/accounts",
        headers=auth,
        json={
            "account_id": account_id,
            "open_id": open_id,
            **{k: tokens[k] for k in ("access_token", "refresh_token", "expires_in", "refresh_expires_in")},
            "scope": tokens["scope"],
        },
    )
    assert resp.status_code == 201, resp.text
    return open_id


async def post_video(
    http: httpx.AsyncClient, stack: Stack, auth: dict[str, str], account_id: str, request_id: str, video: Path
) -> None:
    with video.open("rb") as f:
        resp = await http.post(
            f"{stack.ingest_url}/v1/uploads",
            headers=auth,
            data={
                "account_id": account_id,
                "request_id": request_id,
                "mode": "direct",
                "post_info": json.dumps({"privacy_level": "SELF_ONLY"}),
            },
            files={"file": (video.name, f, "video/mp4")},
        )
    assert resp.status_code == 202, resp.text


async def published(http: httpx.AsyncClient, stack: Stack, auth: dict[str, str], request_id: str) -> None:
    final = await wait_for_upload_state(
        http,
        f"{stack.ingest_url}/v1/uploads/{request_id}",
        until={"published", "failed", "unconfirmed", "cancelled"},
        timeout=240,
        headers=auth,
    )
    assert final["state"] == "published", f"{final}\n{stack.logs()}"


async def publishes_of(http: httpx.AsyncClient, stack: Stack, open_id: str) -> int:
    """How many publishes (inits) TikTok's record shows for the creator."""
    listing = (await http.get(f"{stack.sandbox_url}/sandbox/publishes", params={"open_id": open_id})).json()
    return int(listing["count"])


async def what_b_sees(
    http: httpx.AsyncClient, stack: Stack, auth: dict[str, str], account_id: str, request_id: str
) -> dict[str, Any]:
    """Every answer the key `auth` gets about `account_id` and `request_id`: status and body."""
    base = stack.ingest_url
    calls = {
        "read_upload": await http.get(f"{base}/v1/uploads/{request_id}", headers=auth),
        "cancel_upload": await http.delete(f"{base}/v1/uploads/{request_id}", headers=auth),
        "read_account": await http.get(f"{base}/v1/accounts/{account_id}", headers=auth),
        "post_for_account": await http.post(
            f"{base}/v1/uploads",
            headers=auth,
            json={
                "account_id": account_id,
                "request_id": f"probe-{request_id}",
                "mode": "inbox",
                "video_url": "https://videos.example/probe.mp4",
            },
        ),
        "list_of_account": await http.get(
            f"{base}/v1/uploads", params={"account_id": account_id}, headers=auth
        ),
        "list_all": await http.get(f"{base}/v1/uploads", headers=auth),
        "disconnect_account": await http.delete(f"{base}/v1/accounts/{account_id}", headers=auth),
        "list_accounts": await http.get(f"{base}/v1/accounts", headers=auth),
        "complete_connect": await http.post(
            f"{base}/v1/accounts/{account_id}/connect/complete",
            headers=auth,
            json={"code": "probe-code", "state": "probe-state"},
        ),
    }
    return {name: (resp.status_code, resp.json()) for name, resp in calls.items()}


class TestOverHttp:
    async def test_another_tenants_key_sees_nothing_and_changes_nothing(
        self, stack: Stack, http: httpx.AsyncClient, video_dir: Path
    ) -> None:
        _, a = await new_tenant(stack)
        _, b = await new_tenant(stack)
        account_id, request_id = f"acct-{uuid.uuid4().hex[:8]}", f"req-{uuid.uuid4().hex[:8]}"
        unknown = await what_b_sees(http, stack, b, account_id, request_id)  # nothing exists yet
        statuses = {name: status for name, (status, _) in unknown.items()}
        assert statuses == {
            "read_upload": 404,
            "cancel_upload": 404,
            "read_account": 404,
            "post_for_account": 404,
            "list_of_account": 200,
            "list_all": 200,
            "disconnect_account": 404,
            "list_accounts": 200,
            "complete_connect": 400,
        }

        open_id = await connect(http, stack, a, account_id)
        video = video_dir / "a.mp4"
        write_sample_mp4(video, VIDEO_BYTES)
        await post_video(http, stack, a, account_id, request_id, video)

        # The body of each answer is the one an unknown id gets: never 403, never a hint.
        assert await what_b_sees(http, stack, b, account_id, request_id) == unknown
        # B's cancel cancelled nothing: A's upload is published, once.
        await published(http, stack, a, request_id)
        assert await what_b_sees(http, stack, b, account_id, request_id) == unknown
        assert await publishes_of(http, stack, open_id) == 1
        mine = (await http.get(f"{stack.ingest_url}/v1/uploads", headers=a)).json()
        assert [u["request_id"] for u in mine["items"]] == [request_id]


class TestTwoTenantsSameIds:
    async def test_the_same_request_id_and_account_id_are_two_uploads_both_published(
        self, stack: Stack, http: httpx.AsyncClient, video_dir: Path
    ) -> None:
        tenants = [await new_tenant(stack), await new_tenant(stack)]
        account_id, request_id = "shared-account", f"shared-{uuid.uuid4().hex[:8]}"
        video = video_dir / "shared.mp4"
        write_sample_mp4(video, VIDEO_BYTES)
        open_ids = [await connect(http, stack, auth, account_id) for _, auth in tenants]
        for _, auth in tenants:
            await post_video(http, stack, auth, account_id, request_id, video)
        for _, auth in tenants:
            await published(http, stack, auth, request_id)
        # Each tenant's upload went to its own creator, once.
        assert [await publishes_of(http, stack, open_id) for open_id in open_ids] == [1, 1]
        views = [
            (await http.get(f"{stack.ingest_url}/v1/uploads/{request_id}", headers=auth)).json()
            for _, auth in tenants
        ]
        assert [(v["request_id"], v["account_id"]) for v in views] == [(request_id, account_id)] * 2
        assert views[0]["publish_id"] != views[1]["publish_id"]


class TestOverKafka:
    async def test_a_record_naming_one_tenant_and_anothers_account_is_dead_lettered_and_posts_nothing(
        self, stack: Stack, http: httpx.AsyncClient, kafka_bootstrap_servers: str
    ) -> None:
        _, a = await new_tenant(stack)
        tenant_b, b = await new_tenant(stack)
        account_id = f"acct-{uuid.uuid4().hex[:8]}"
        open_id = await connect(http, stack, a, account_id)  # A's account; B has none of that id
        request_id = f"upstream-{uuid.uuid4().hex[:8]}"
        command = UploadRequested(
            request_id=request_id,
            account_id=account_id,
            tenant_id=tenant_b,
            mode="inbox",
            source=UrlSource(url="https://videos.example/never-read.mp4"),
        )
        topic = stack.topics["REELAY_TOPIC_UPLOAD_REQUESTED"]
        async with KafkaPublisher(kafka_bootstrap_servers, client_id="e2e-tenancy") as producer:
            await producer.publish(topic, command, key=scoped(tenant_b, account_id))

        def mine(records: list[TopicRecord]) -> bool:
            return any(DeadLetter.model_validate_json(r.value).request_id == request_id for r in records)

        records = await read_topic(kafka_bootstrap_servers, dlq_topic(topic), until=mine, timeout=120)
        [letter] = [
            d for r in records if (d := DeadLetter.model_validate_json(r.value)).request_id == request_id
        ]
        assert (letter.reason, letter.tenant_id, letter.account_id) == (
            "account_not_in_tenant",
            tenant_b,
            account_id,
        )
        assert tenant_b in letter.error
        # Nothing was posted (TikTok's record shows no init) and no upload exists for either tenant.
        assert await publishes_of(http, stack, open_id) == 0
        for auth in (a, b):
            resp = await http.get(f"{stack.ingest_url}/v1/uploads/{request_id}", headers=auth)
            assert resp.status_code == 404
