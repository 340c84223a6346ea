"""Promise 1 through the outbox (docs/architecture.md): a request that arrives while Kafka is down is
accepted and uploaded once Kafka is back; a process killed between its Mongo write and its Kafka
send loses nothing; scheduled uploads go out when due, even after ingest was killed meanwhile, and
a cancel works before the init and is refused after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from reelay_common.domain.messages import PublishStatusChanged
from reelay_common.domain.states import UploadState
from reelay_testing.kafka import TopicRecord, read_topic
from reelay_testing.waiting import eventually
from tiktok_sandbox.media import write_sample_mp4

from tests.e2e.flows import assert_published_once, connect_account, first_chunk_stored, post_video
from tests.e2e.stack import Stack, running_stack, wait_for_upload_state
from tests.e2e.test_infra_restarts import OwnKafka

pytestmark = pytest.mark.e2e

S = UploadState
PATH = (S.ACCEPTED, S.UPLOADING, S.UPLOADED, S.PROCESSING, S.PUBLISHED)
# Short leases and rounds, so a killed writer's outbox is taken over within seconds.
OUTBOX_ENV = {
    "REELAY_OUTBOX_LEASE_SECONDS": "3",
    "REELAY_OUTBOX_INTERVAL_SECONDS": "0.3",
    "REELAY_OUTBOX_SEND_TIMEOUT_SECONDS": "2",
    "INGEST_ACCEPT_WAIT_SECONDS": "0.2",
}


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnKafka]:
    broker = OwnKafka(tmp_path_factory.mktemp("outbox-kafka"))
    if not Path(broker.cfg.kafka_libs).exists():
        pytest.fail(f"{broker.cfg.kafka_libs} is missing: run `make kafka` (make test installs it)")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture(scope="module")
def stack(own_kafka: OwnKafka, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        kafka_bootstrap_servers=own_kafka.bootstrap,
        mongodb_uri=mongodb_uri,
        workdir=tmp_path_factory.mktemp("outbox-stack"),
        extra_env=OUTBOX_ENV,
    ) as s:
        yield s


async def changes_of(kafka: str, stack: Stack, request_id: str, until: S) -> list[S]:
    """The states announced for `request_id`, read until `until` has been announced."""

    def mine(records: Sequence[TopicRecord]) -> list[S]:
        messages = (PublishStatusChanged.model_validate_json(r.value) for r in records)
        return [m.state for m in messages if m.request_id == request_id]

    records = await read_topic(
        kafka,
        stack.topics["REELAY_TOPIC_PUBLISH_STATUS"],
        until=lambda rs: until in mine(rs),
        timeout=120,
        linger=0.5,
    )
    return mine(records)


def assert_forward(states: list[S]) -> None:
    """Announcements in forward order (repeats allowed: at least once), every step present once."""
    ranks = [s.rank for s in states]
    assert ranks == sorted(ranks), f"announced out of order: {states}"


class TestKafkaDown:
    async def test_requests_during_an_outage_are_accepted_at_once_and_uploaded_once_kafka_is_back(
        self, stack: Stack, own_kafka: OwnKafka, http: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        accounts = [await connect_account(http, stack) for _ in range(20)]
        video = tmp_path / "small.mp4"
        write_sample_mp4(video, 300_000)
        await asyncio.to_thread(own_kafka.kill)
        try:
            answered: list[tuple[str, float]] = []
            for account_id, _ in accounts:
                started = time.monotonic()
                request_id = await post_video(http, stack, account_id, video)  # asserts the 202
                answered.append((request_id, time.monotonic() - started))
        finally:
            await asyncio.to_thread(own_kafka.start)
        slowest = max(seconds for _, seconds in answered)
        assert slowest < 1.0, f"a request waited {slowest:.2f} s for the broker that was down"

        for (request_id, _), (_, open_id) in zip(answered, accounts, strict=True):
            await assert_published_once(http, stack, request_id, open_id, video)
        for request_id, _ in answered:
            states = await changes_of(own_kafka.bootstrap, stack, request_id, S.PUBLISHED)
            assert_forward(states)
            # (`processing` only when a poll saw TikTok still at it)
            assert {S.ACCEPTED, S.UPLOADING, S.UPLOADED, S.PUBLISHED} <= set(states) <= {*PATH}


class TestKilledBetweenWriteAndSend:
    @pytest.mark.parametrize(
        ("service", "cut"),
        [("ingest", S.ACCEPTED), ("uploader", S.UPLOADING), ("status-poller", S.PUBLISHED)],
    )
    async def test_the_change_is_announced_once_the_service_is_back(
        self, service: str, cut: S, stack: Stack, own_kafka: OwnKafka, http: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        account_id, open_id = await connect_account(http, stack)
        video = tmp_path / "crash.mp4"
        write_sample_mp4(video, 300_000)
        marker = tmp_path / f"{service}.crashed"
        normal = dict(stack.env)
        stack.kill(service)
        stack.env = {**normal, "REELAY_CRASH_BEFORE_SEND": str(marker)}
        try:
            stack.start(service)  # this one kills itself after its first write that owes Kafka
        finally:
            stack.env = normal
        try:
            request_id = await post_video(http, stack, account_id, video)
        except httpx.TransportError:
            # Ingest died after storing the upload, before answering: the client retries. The
            # retry is answered once ingest is back, below; the stored upload is the one.
            request_id = ""
        process = stack.services[service].process
        assert process is not None
        await eventually(lambda: process.poll() is not None, timeout=120, what=f"{service} to crash")
        assert marker.exists()
        stack.start(service)
        if not request_id:
            listing = (
                await http.get(
                    f"{stack.ingest_url}/v1/uploads", params={"account_id": account_id}, headers=stack.headers
                )
            ).json()
            [stored] = listing["items"]
            request_id = stored["request_id"]

        await assert_published_once(http, stack, request_id, open_id, video)
        states = await changes_of(own_kafka.bootstrap, stack, request_id, S.PUBLISHED)
        assert_forward(states)
        upload = (await http.get(f"{stack.ingest_url}/v1/uploads/{request_id}", headers=stack.headers)).json()
        history = [S(h["state"]) for h in upload["history"]]
        # Whichever write the crash cut off from its send (the first that owed Kafka, `cut` unless a
        # relay took an earlier one): every change is announced all the same. (The uploader's
        # crash comes after TikTok has every byte: the `uploading` announcement lingers, and a
        # video this small sends it with `uploaded`'s drain, or beside the chunks when slow. Then
        # TikTok's webhook can settle the upload before the restarted uploader records
        # `uploaded`, and the history goes from `uploading` to `published`.)
        assert {S.ACCEPTED, cut, S.PUBLISHED} <= set(history) <= set(states), (
            f"{cut} (or an earlier change) was written before the crash but never announced: "
            f"history {history}, announced {states}"
        )


class TestScheduled:
    async def test_fires_when_due_after_ingest_was_killed_while_it_waited(
        self, stack: Stack, own_kafka: OwnKafka, http: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        account_id, open_id = await connect_account(http, stack)
        video = tmp_path / "later.mp4"
        write_sample_mp4(video, 300_000)
        publish_at = datetime.now(UTC) + timedelta(seconds=12)
        request_id = await post_video(http, stack, account_id, video, publish_at=publish_at.isoformat())
        held = (await http.get(f"{stack.ingest_url}/v1/uploads/{request_id}", headers=stack.headers)).json()
        assert held["state"] == "scheduled"
        stack.kill("ingest")
        await asyncio.sleep(3)
        stack.start("ingest")

        await assert_published_once(http, stack, request_id, open_id, video)
        upload = (await http.get(f"{stack.ingest_url}/v1/uploads/{request_id}", headers=stack.headers)).json()
        released = next(h for h in upload["history"] if h["state"] == "accepted")
        released_at = datetime.fromisoformat(released["at"])
        assert released["source"] == "scheduler"
        assert publish_at - timedelta(milliseconds=1) <= released_at <= publish_at + timedelta(seconds=10)

    async def test_a_cancel_before_the_time_holds_and_one_after_the_init_is_refused(
        self, stack: Stack, http: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        account_id, open_id = await connect_account(http, stack)
        body = {
            "account_id": account_id,
            "mode": "inbox",
            "video_url": f"{stack.sandbox_url}/sandbox/never-fetched.mp4",
            "publish_at": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
        }
        resp = await http.post(f"{stack.ingest_url}/v1/uploads", json=body, headers=stack.headers)
        assert resp.status_code == 202, resp.text
        scheduled_id = resp.json()["request_id"]
        cancel = await http.delete(f"{stack.ingest_url}/v1/uploads/{scheduled_id}", headers=stack.headers)
        assert (cancel.status_code, cancel.json()["state"]) == (200, "cancelled")
        await asyncio.sleep(4)  # past its time: nothing goes out
        after = (
            await http.get(f"{stack.ingest_url}/v1/uploads/{scheduled_id}", headers=stack.headers)
        ).json()
        assert after["state"] == "cancelled"
        listing = (
            await http.get(f"{stack.sandbox_url}/sandbox/publishes", params={"open_id": open_id})
        ).json()
        assert listing["count"] == 0

        video = tmp_path / "big.mp4"
        write_sample_mp4(video, 30 * 1000 * 1000)
        request_id = await post_video(http, stack, account_id, video)
        await first_chunk_stored(http, stack, open_id)
        refused = await http.delete(f"{stack.ingest_url}/v1/uploads/{request_id}", headers=stack.headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "not_cancellable"
        await wait_for_upload_state(
            http,
            f"{stack.ingest_url}/v1/uploads/{request_id}",
            until={"published", "failed"},
            timeout=300,
            headers=stack.headers,
        )
