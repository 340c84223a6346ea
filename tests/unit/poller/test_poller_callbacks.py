"""Callbacks (docs/architecture.md, "Callbacks"): the handler makes one attempt per call and
records it; 2xx delivers, 408/429/5xx and lost answers are retried within the budget, other 4xx
and redirects fail at once; a finished callback is never sent again. The sender signs each POST
so that a receiver's check passes, and a wrong secret or a changed body fails it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from reelay_common.adapters.callbacks import HttpCallbackSender
from reelay_common.domain.callbacks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    CallbackAnswer,
    SignatureInvalid,
    sign,
    verdict_of,
    verify_signature,
)
from reelay_common.domain.messages import PublishStatusChanged, UploadRequested
from reelay_common.domain.rules import Backoff
from reelay_common.domain.states import UploadState
from reelay_status_poller.callbacks import (
    CallbackDeferred,
    CallbackDeps,
    CallbackPolicy,
    callback_body,
    handle_status_changed,
)
from reelay_status_poller.settings import PollerSettings
from reelay_testing.clocks import FakeClock
from reelay_testing.stores import FakeUploadStore

S = UploadState
SECRET = "unit-callback-secret"
HOOK = "https://151.101.1.2/hooks"  # an IP literal: the SSRF guard resolves it without I/O
POLICY = CallbackPolicy(default_url=None, retry_seconds=60.0, backoff=Backoff(1.0, 10.0, jitter=0.2))


@dataclass
class ScriptedSender:
    """Answers each send with the next scripted answer; remembers what it was asked to send."""

    answers: list[CallbackAnswer] = field(default_factory=list)
    sent: list[tuple[str, bytes, str]] = field(default_factory=list)

    async def send(self, url: str, body: bytes, *, delivery_id: str) -> CallbackAnswer:
        self.sent.append((url, body, delivery_id))
        return self.answers.pop(0)


@dataclass
class World:
    uploads: FakeUploadStore = field(default_factory=FakeUploadStore)
    sender: ScriptedSender = field(default_factory=ScriptedSender)
    clock: FakeClock = field(default_factory=FakeClock)
    policy: CallbackPolicy = POLICY

    @property
    def deps(self) -> CallbackDeps:
        return CallbackDeps(uploads=self.uploads, sender=self.sender, policy=self.policy, clock=self.clock)

    async def upload(self, request_id: str = "req-1", *, callback_url: str | None = HOOK) -> None:
        cmd = UploadRequested.model_validate(
            {
                "request_id": request_id,
                "account_id": "acct-1",
                "mode": "inbox",
                "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
                "callback_url": callback_url,
            }
        )
        await self.uploads.create(cmd, source="ingest")


def change(state: UploadState = S.ACCEPTED, request_id: str = "req-1") -> PublishStatusChanged:
    return PublishStatusChanged(request_id=request_id, account_id="acct-1", state=state, source="ingest")


def attempts_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("reelay_callback_attempts_total", {"outcome": outcome}) or 0.0


@pytest.fixture
def world() -> World:
    return World()


class TestOneAttemptPerCall:
    async def test_a_2xx_delivers_and_is_recorded(self, world: World) -> None:
        await world.upload()
        world.sender.answers = [CallbackAnswer("delivered", status=204)]
        msg = change()

        await handle_status_changed(msg, world.deps)

        assert world.sender.sent == [(HOOK, callback_body(msg), "req-1:accepted")]
        assert json.loads(world.sender.sent[0][1])["state"] == "accepted"
        done = world.uploads.records["req-1"].callbacks[S.ACCEPTED]
        assert (done.outcome, done.attempts, done.last_status) == ("delivered", 1, 204)
        assert done.delivered_at is not None

    async def test_a_5xx_is_retried_after_the_backoff_then_delivered(self, world: World) -> None:
        await world.upload()
        world.sender.answers = [CallbackAnswer("retry", status=500), CallbackAnswer("delivered", status=200)]
        msg = change()

        with pytest.raises(CallbackDeferred) as deferred:
            await handle_status_changed(msg, world.deps)
        assert deferred.value.retry_after is not None
        assert 0.8 <= deferred.value.retry_after <= 1.2  # Backoff(1.0) jittered by 20%
        pending = world.uploads.records["req-1"].callbacks[S.ACCEPTED]
        assert (pending.outcome, pending.attempts, pending.last_status) == ("pending", 1, 500)

        world.clock.advance(1.0)
        await handle_status_changed(msg, world.deps)
        done = world.uploads.records["req-1"].callbacks[S.ACCEPTED]
        assert (done.outcome, done.attempts, done.last_status) == ("delivered", 2, 200)
        assert done.first_attempt_at == pending.first_attempt_at
        # The same bytes both times: the body is the change, not the attempt.
        assert world.sender.sent[0][1] == world.sender.sent[1][1]

    async def test_retries_end_once_the_budget_is_spent(self, world: World) -> None:
        await world.upload()
        world.sender.answers = [CallbackAnswer("retry", error="timeout") for _ in range(3)]
        with pytest.raises(CallbackDeferred):
            await handle_status_changed(change(), world.deps)
        world.clock.advance(30)
        with pytest.raises(CallbackDeferred):
            await handle_status_changed(change(), world.deps)
        world.clock.advance(29)  # 59 s after the first attempt: the next wait would pass 60 s

        await handle_status_changed(change(), world.deps)

        gave_up = world.uploads.records["req-1"].callbacks[S.ACCEPTED]
        assert (gave_up.outcome, gave_up.attempts, gave_up.last_error) == ("failed", 3, "timeout")
        assert gave_up.gave_up_at is not None

    async def test_a_4xx_fails_at_once(self, world: World) -> None:
        await world.upload()
        world.sender.answers = [verdict_of(404)]

        before = attempts_counted("failed")

        await handle_status_changed(change(), world.deps)

        failed = world.uploads.records["req-1"].callbacks[S.ACCEPTED]
        assert (failed.outcome, failed.attempts, failed.last_status) == ("failed", 1, 404)
        assert attempts_counted("failed") == before + 1
        assert failed.gave_up_at is not None

    async def test_a_finished_callback_is_not_sent_again(self, world: World) -> None:
        await world.upload()
        world.sender.answers = [CallbackAnswer("delivered", status=200)]
        await handle_status_changed(change(), world.deps)

        await handle_status_changed(change(), world.deps)  # the same announcement, redelivered

        assert len(world.sender.sent) == 1
        assert world.uploads.records["req-1"].callbacks[S.ACCEPTED].attempts == 1

    async def test_each_state_has_its_own_callback(self, world: World) -> None:
        await world.upload()
        world.sender.answers = [CallbackAnswer("delivered", status=200)] * 2
        await handle_status_changed(change(S.ACCEPTED), world.deps)
        await handle_status_changed(change(S.UPLOADING), world.deps)

        assert [d for _, _, d in world.sender.sent] == ["req-1:accepted", "req-1:uploading"]
        assert set(world.uploads.records["req-1"].callbacks) == {S.ACCEPTED, S.UPLOADING}


class TestWhereTo:
    async def test_the_deployments_default_serves_uploads_that_name_none(self, world: World) -> None:
        world.policy = CallbackPolicy(
            default_url="https://151.101.1.3/d", retry_seconds=60, backoff=POLICY.backoff
        )
        await world.upload(callback_url=None)
        world.sender.answers = [CallbackAnswer("delivered", status=200)]

        await handle_status_changed(change(), world.deps)

        assert [u for u, _, _ in world.sender.sent] == ["https://151.101.1.3/d"]

    async def test_no_url_and_no_default_sends_nothing(self, world: World) -> None:
        await world.upload(callback_url=None)

        await handle_status_changed(change(), world.deps)

        assert world.sender.sent == []
        assert world.uploads.records["req-1"].callbacks == {}

    async def test_an_unknown_upload_sends_nothing(self, world: World) -> None:
        await handle_status_changed(change(request_id="nobody"), world.deps)

        assert world.sender.sent == []


class TestTenants:
    async def test_a_tenants_change_is_the_callback_of_its_own_upload(self, world: World) -> None:
        """Two tenants' equal request_ids: the change of one is recorded on that tenant's upload only,
        and the body names the client's ids and the tenant."""
        await world.upload()  # the default tenant's req-1
        cmd = UploadRequested.model_validate(
            {
                "request_id": "req-1",
                "account_id": "acct-1",
                "tenant_id": "team-a",
                "mode": "inbox",
                "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
                "callback_url": HOOK,
            }
        )
        await world.uploads.create(cmd, source="ingest")
        world.sender.answers = [CallbackAnswer("delivered", status=204)]
        msg = change().model_copy(update={"tenant_id": "team-a"})

        await handle_status_changed(msg, world.deps)

        body = json.loads(world.sender.sent[0][1])
        assert (body["request_id"], body["account_id"], body["tenant_id"]) == ("req-1", "acct-1", "team-a")
        assert world.uploads.records["team-a~req-1"].callbacks[S.ACCEPTED].outcome == "delivered"
        assert world.uploads.records["req-1"].callbacks == {}


class TestVerdicts:
    @pytest.mark.parametrize(
        ("status", "verdict"),
        [
            (200, "delivered"),
            (204, "delivered"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
            (400, "refused"),
            (401, "refused"),
            (404, "refused"),
            (410, "refused"),
            (301, "refused"),
            (302, "refused"),
            (307, "refused"),
        ],
    )
    def test_what_an_answer_means(self, status: int, verdict: str) -> None:
        assert verdict_of(status).verdict == verdict


class TestSignature:
    def test_a_receivers_check_passes_for_what_was_signed(self) -> None:
        body = b'{"state": "published"}'
        assert (
            verify_signature(sign(SECRET, 1_800_000_000, body), body, SECRET, now=1_800_000_100)
            == 1_800_000_000
        )

    @pytest.mark.parametrize(
        ("header", "body", "secret", "code"),
        [
            (None, b"{}", SECRET, "signature_missing"),
            ("t=abc,s=00", b"{}", SECRET, "signature_malformed"),
            (sign("another-secret", 1_800_000_000, b"{}"), b"{}", SECRET, "signature_mismatch"),
            (sign(SECRET, 1_800_000_000, b"{}"), b'{"x":1}', SECRET, "signature_mismatch"),
            (sign(SECRET, 1_799_999_000, b"{}"), b"{}", SECRET, "signature_expired"),
        ],
    )
    def test_a_bad_signature_fails_the_check(
        self, header: str | None, body: bytes, secret: str, code: str
    ) -> None:
        with pytest.raises(SignatureInvalid) as refused:
            verify_signature(header, body, secret, now=1_800_000_000, tolerance=300)
        assert refused.value.code == code


def sender_over(handler: httpx.MockTransport, *, allow_private: bool = False) -> HttpCallbackSender:
    http = httpx.AsyncClient(transport=handler, follow_redirects=False)
    return HttpCallbackSender(http, SECRET, allow_private=allow_private, clock=lambda: 1_800_000_000.0)


class TestHttpSender:
    async def test_posts_the_body_signed_so_that_the_receivers_check_passes(self) -> None:
        seen: list[httpx.Request] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(202)

        result = await sender_over(httpx.MockTransport(answer)).send(
            HOOK, b'{"a":1}', delivery_id="r:accepted"
        )

        assert result == CallbackAnswer("delivered", status=202)
        (request,) = seen
        assert request.method == "POST"
        assert request.content == b'{"a":1}'
        assert request.headers["content-type"] == "application/json"
        assert request.headers[DELIVERY_HEADER] == "r:accepted"
        verify_signature(request.headers[SIGNATURE_HEADER], request.content, SECRET, now=1_800_000_000)

    async def test_a_redirect_is_not_followed(self) -> None:
        seen: list[str] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url))
            return httpx.Response(302, headers={"Location": "https://151.101.1.9/elsewhere"})

        result = await sender_over(httpx.MockTransport(answer)).send(HOOK, b"{}", delivery_id="d")

        assert result == CallbackAnswer("refused", status=302, error="redirect_not_followed")
        assert seen == [HOOK]

    async def test_a_private_target_is_refused_without_a_request(self) -> None:
        def answer(request: httpx.Request) -> httpx.Response:
            raise AssertionError("nothing may be sent to a private address")

        result = await sender_over(httpx.MockTransport(answer)).send(
            "https://10.0.0.5/hook", b"{}", delivery_id="d"
        )

        assert result == CallbackAnswer("refused", error="callback_url_not_public")

    async def test_plain_http_is_refused_unless_private_urls_are_allowed(self) -> None:
        result = await sender_over(httpx.MockTransport(lambda r: httpx.Response(200))).send(
            "http://151.101.1.2/hook", b"{}", delivery_id="d"
        )
        assert result == CallbackAnswer("refused", error="callback_url_scheme")
        dev = sender_over(httpx.MockTransport(lambda r: httpx.Response(200)), allow_private=True)
        assert (await dev.send("http://127.0.0.1:9/h", b"{}", delivery_id="d")).verdict == "delivered"

    async def test_timeouts_and_lost_connections_are_retried(self) -> None:
        def timeout(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        def refused(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        assert await sender_over(httpx.MockTransport(timeout)).send(HOOK, b"{}", delivery_id="d") == (
            CallbackAnswer("retry", error="timeout")
        )
        lost = await sender_over(httpx.MockTransport(refused)).send(HOOK, b"{}", delivery_id="d")
        assert (lost.verdict, lost.error) == ("retry", "connection_error: ConnectError")


class TestSettings:
    def test_the_dev_secret_is_refused_in_prod(self) -> None:
        with pytest.raises(ValidationError, match="POLLER_CALLBACK_SECRET"):
            PollerSettings.model_validate(
                {
                    "environment": "prod",
                    "tiktok_client_secret": "s3cret",
                    "token_encryption_key": "ZmFrZS1idXQtd2VsbC1mb3JtZWQta2V5LTMyYnl0ZXM=",
                }
            )

    def test_a_plain_http_default_is_refused_unless_private_urls_are_allowed(self) -> None:
        with pytest.raises(ValidationError, match="POLLER_CALLBACK_DEFAULT_URL"):
            PollerSettings.model_validate({"callback_default_url": "http://hooks.example.com/x"})
        dev = PollerSettings.model_validate(
            {"callback_default_url": "http://127.0.0.1:9/x", "callback_allow_private_urls": True}
        )
        assert dev.callback_default_url == "http://127.0.0.1:9/x"
