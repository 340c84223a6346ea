"""Callbacks on the real stack (docs/architecture.md, "Callbacks"): the status-poller's callbacks
consumer reads real Kafka, records on a real Mongo-wire server, and POSTs to a receiver on loopback
(allow-listed for the test with POLLER_CALLBACK_ALLOW_PRIVATE_URLS): every change arrives signed
and in order after the receiver answered 500 to its first tries, a 4xx ends a callback, a redirect
is not followed, and without the allow-list a loopback target is refused at delivery."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from reelay_common.domain.callbacks import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature
from reelay_common.domain.messages import PublishStatusChanged
from reelay_common.domain.records import CallbackDelivery, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_testing.waiting import eventually

from tests.conftest import UniqueTopic
from tests.integration.poller.poller_world import World

S = UploadState
SECRET = "integration-callback-secret"
# What the ingest and uploader services announce before the poller takes over.
EARLIER = [
    (None, S.ACCEPTED, "ingest"),
    (S.ACCEPTED, S.UPLOADING, "uploader"),
    (S.UPLOADING, S.UPLOADED, "uploader"),
]


@dataclass
class Receiver:
    """A callback receiver on loopback: answers each POST with `answer(path, n)` (n counts that
    path's requests from 0) and keeps what came (path, headers, raw body)."""

    answer: Callable[[str, int], web.StreamResponse]
    base_url: str = ""
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def at(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for p, h, b in self.received if p == path]


@asynccontextmanager
async def receiver(answer: Callable[[str, int], web.StreamResponse]) -> AsyncIterator[Receiver]:
    got = Receiver(answer)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        n = len(got.at(request.path))
        got.received.append((request.path, dict(request.headers), body))
        return got.answer(request.path, n)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    got.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield got
    finally:
        await runner.cleanup()


def callback_settings(world: World, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "callback_consumer_group": f"{world.group}-callbacks",
        "callback_secret": SECRET,
        "callback_allow_private_urls": True,
        "callback_timeout_seconds": 5.0,
        "callback_retry_seconds": 60.0,
        "callback_backoff_initial_seconds": 0.2,
        "callback_backoff_max_seconds": 0.5,
    }
    values.update(overrides)
    return values


async def upload_with_callback(world: World, account: str, url: str) -> UploadRecord:
    """An uploaded video whose request named `url`, with what ingest and the uploader announced."""
    record = await world.uploaded_video(account)
    with_url = await world.uploads.checkpoint(record.request_id, {"callback_url": url})
    assert with_url is not None
    for previous, state, source in EARLIER:
        change = PublishStatusChanged(
            request_id=record.request_id,
            account_id=account,
            publish_id=record.publish_id if state is not S.ACCEPTED else None,
            state=state,
            previous_state=previous,
            source=source,
        )
        await world.publisher.publish(world.status_topic, change, key=account)
    return with_url


async def uploads_to(world: World, hooks: Receiver, *paths: str) -> list[UploadRecord]:
    """One account per receiver path (`acct-<path>`), each with an upload calling back there."""
    made = []
    for path in paths:
        account = await world.connected_account(f"acct-{path.strip('/')}")
        made.append(await upload_with_callback(world, account, f"{hooks.base_url}{path}"))
    return made


async def callbacks_of(world: World, request_id: str) -> dict[UploadState, CallbackDelivery]:
    record = await world.uploads.get(request_id)
    assert record is not None
    return record.callbacks


async def wait_for_callbacks(world: World, request_id: str, states: list[UploadState]) -> None:
    async def finished() -> bool:
        found = await callbacks_of(world, request_id)
        return all(s in found and found[s].finished for s in states)

    await eventually(finished, timeout=60, what=f"the callbacks of {[s.value for s in states]}")


class TestEveryChangeSignedAndInOrder:
    async def test_the_receiver_gets_every_change_in_order_after_answering_500_first(
        self, world: World
    ) -> None:
        def answer(path: str, n: int) -> web.StreamResponse:
            return web.Response(status=500 if n < 2 else 204)

        async with receiver(answer) as hooks:
            account = await world.connected_account("acct-cb")
            record = await upload_with_callback(world, account, f"{hooks.base_url}/hooks")
            every = [S.ACCEPTED, S.UPLOADING, S.UPLOADED, S.PROCESSING, S.PUBLISHED]
            async with world.running_poller(**callback_settings(world)):
                await world.announce_uploaded(record)
                await world.wait_for_state(record.request_id, S.PUBLISHED)
                await wait_for_callbacks(world, record.request_id, every)

        posts = hooks.at("/hooks")
        bodies = [json.loads(body) for _, body in posts]
        # The first delivery was tried three times (500, 500, 204); each change then once, in order.
        assert [b["state"] for b in bodies] == [
            "accepted",
            "accepted",
            "accepted",
            *[s.value for s in every[1:]],
        ]
        assert all(b["request_id"] == record.request_id for b in bodies)
        for headers, body in posts:
            verify_signature(headers[SIGNATURE_HEADER], body, SECRET, now=time.time())
        assert [h[DELIVERY_HEADER] for h, _ in posts[2:]] == [f"{record.request_id}:{s.value}" for s in every]
        found = await callbacks_of(world, record.request_id)
        assert found[S.ACCEPTED].attempts == 3
        assert found[S.ACCEPTED].last_status == 204
        assert all(found[s].outcome == "delivered" and found[s].attempts == 1 for s in every[1:])


class TestEndsWithoutRetrying:
    async def test_a_4xx_stops_the_callback_and_a_redirect_is_not_followed(self, world: World) -> None:
        def answer(path: str, n: int) -> web.StreamResponse:
            if path == "/gone":
                return web.Response(status=410)
            if path == "/moved":
                raise web.HTTPFound("/elsewhere")
            return web.Response(status=200)

        async with receiver(answer) as hooks:
            gone, moved = await uploads_to(world, hooks, "/gone", "/moved")
            earlier = [s for _, s, _ in EARLIER]
            async with world.running_poller(**callback_settings(world)):
                await wait_for_callbacks(world, gone.request_id, earlier)
                await wait_for_callbacks(world, moved.request_id, earlier)

        for record, status, error in (
            (gone, 410, "refused_by_receiver"),
            (moved, 302, "redirect_not_followed"),
        ):
            found = await callbacks_of(world, record.request_id)
            assert {s: (d.outcome, d.attempts, d.last_status, d.last_error) for s, d in found.items()} == {
                s: ("failed", 1, status, error) for s in earlier
            }
            assert all(d.gave_up_at is not None for d in found.values())
        assert len(hooks.at("/gone")) == 3  # one attempt per change, none retried
        assert len(hooks.at("/moved")) == 3
        assert hooks.at("/elsewhere") == []


class TestRefusedAtDelivery:
    async def test_a_loopback_target_is_refused_when_private_urls_are_not_allowed(self, world: World) -> None:
        async with receiver(lambda path, n: web.Response(status=200)) as hooks:
            account = await world.connected_account("acct-ssrf")
            # An upstream producer may name any URL on Kafka; here it resolves into our network.
            target = hooks.base_url.replace("http://", "https://") + "/internal"
            record = await upload_with_callback(world, account, target)
            earlier = [s for _, s, _ in EARLIER]
            async with world.running_poller(**callback_settings(world, callback_allow_private_urls=False)):
                await wait_for_callbacks(world, record.request_id, earlier)

        found = await callbacks_of(world, record.request_id)
        assert {d.last_error for d in found.values()} == {"callback_url_not_public"}
        assert {d.outcome for d in found.values()} == {"failed"}
        assert hooks.received == []


class TestNeverStalls:
    async def test_a_receiver_that_keeps_failing_holds_up_no_other_account_on_its_partition(
        self, world: World, unique_topic: UniqueTopic
    ) -> None:
        def answer(path: str, n: int) -> web.StreamResponse:
            return web.Response(status=503 if path == "/down" else 204)

        # One partition, so both accounts' changes share it; the failing account's come first.
        world = dataclasses.replace(world, status_topic=await unique_topic("poller.status.one", partitions=1))
        async with receiver(answer) as hooks:
            down, up = await uploads_to(world, hooks, "/down", "/up")
            earlier = [s for _, s, _ in EARLIER]
            settings = callback_settings(
                world, topic_publish_status=world.status_topic, callback_retry_seconds=600
            )
            async with world.running_poller(**settings):
                await wait_for_callbacks(world, up.request_id, earlier)

                async def retried_twice() -> bool:
                    return len(hooks.at("/down")) >= 2

                await eventually(retried_twice, timeout=30, what="the failing receiver tried again")
                pending = await callbacks_of(world, down.request_id)

        assert all(d.outcome == "delivered" for d in (await callbacks_of(world, up.request_id)).values())
        # The failing account's first change is still being retried, and its later ones wait behind it.
        assert set(pending) == {S.ACCEPTED}
        assert pending[S.ACCEPTED].outcome == "pending"
        assert pending[S.ACCEPTED].last_status == 503
        assert {json.loads(body)["state"] for _, body in hooks.at("/down")} == {"accepted"}
