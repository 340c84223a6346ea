"""Callbacks: each state change announced on `reelay.publish.status` is POSTed, signed, to the
upload's callback URL (docs/architecture.md, "Callbacks").

One handler call is one attempt, recorded on the upload before the record's fate is decided: a
retry is the consumer loop's (the record stays uncommitted, `CallbackDeferred` says how long to
wait), so the order of one account's partition is the order of delivery, and a process killed
between attempts goes on from the attempts and deadline the upload holds. No framework here:
the sender is a port (`reelay_common.adapters.callbacks.HttpCallbackSender` in production)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from prometheus_client import Counter
from reelay_common.domain.callbacks import CallbackAnswer
from reelay_common.domain.errors import RateLimitedError
from reelay_common.domain.messages import PublishStatusChanged
from reelay_common.domain.records import CallbackDelivery
from reelay_common.domain.rules import Backoff
from reelay_common.domain.tenancy import scoped
from reelay_common.logging import get_logger
from reelay_common.ports import UploadStore

log = get_logger(__name__)

# Registered once per process; served by the ops server.
ATTEMPTS = Counter(
    "reelay_callback_attempts_total",
    "Callback POSTs made, by what they came to: delivered, retry (pending), failed.",
    ["outcome"],
)


class CallbackSender(Protocol):
    """POSTs one signed body to a callback URL and says how it went (never raises for the receiver)."""

    async def send(self, url: str, body: bytes, *, delivery_id: str) -> CallbackAnswer: ...


@dataclass(frozen=True)
class CallbackPolicy:
    """Where callbacks go when a request named none, and how long and how often they are retried."""

    default_url: str | None
    retry_seconds: float
    backoff: Backoff


@dataclass(frozen=True)
class CallbackDeps:
    """What the callbacks handler works with."""

    uploads: UploadStore
    sender: CallbackSender
    policy: CallbackPolicy
    clock: Callable[[], datetime]


class CallbackDeferred(RateLimitedError):
    """The receiver did not take the callback yet: the consumer loop tries the record again after
    `retry_after` seconds (the callbacks' jittered backoff), leaving it uncommitted meanwhile."""


def callback_body(msg: PublishStatusChanged) -> bytes:
    """What is POSTed: the PublishStatusChanged JSON, the same bytes on every attempt."""
    return msg.model_dump_json().encode()


def delivery_id(msg: PublishStatusChanged) -> str:
    """`<request_id>:<state>`: names one delivery across its attempts (the Reelay-Delivery header)."""
    return f"{msg.request_id}:{msg.state.value}"


async def handle_status_changed(msg: PublishStatusChanged, deps: CallbackDeps) -> None:
    """Make the next attempt of this state change's callback, if one is owed, and record it.

    Nothing to do for an unknown upload, an upload with no callback URL (and no default), or a
    state whose callback is finished already (a redelivered or repeated announcement). Raises
    CallbackDeferred while retries are due."""
    key = scoped(msg.tenant_id, msg.request_id)  # the upload's stored key
    record = await deps.uploads.get(key)
    if record is None:
        log.info("callback_skipped", reason="unknown_upload", request_id=msg.request_id)
        return
    url = record.callback_url or deps.policy.default_url
    if url is None:
        return
    current = record.callbacks.get(msg.state)
    if current is not None and current.finished:
        log.info("callback_skipped", reason="already_" + current.outcome, state=msg.state.value)
        return
    started = deps.clock()
    first = current.first_attempt_at if current is not None else started
    attempts = (current.attempts if current is not None else 0) + 1
    answer = await deps.sender.send(url, callback_body(msg), delivery_id=delivery_id(msg))
    now = deps.clock()
    delivery, wait = _outcome(msg, answer, first=first, attempts=attempts, now=now, policy=deps.policy)
    if await deps.uploads.record_callback(key, delivery) is None:
        # Finished meanwhile by another consumer (a rebalance handed the record over twice).
        log.info("callback_finished_elsewhere", state=msg.state.value)
        return
    ATTEMPTS.labels(outcome="retry" if wait is not None else delivery.outcome).inc()
    log.info(
        "callback_attempted",
        state=msg.state.value,
        outcome=delivery.outcome,
        attempts=attempts,
        http_status=answer.status,
        error=answer.error,
    )
    if wait is not None:
        raise CallbackDeferred(
            f"callback of {msg.state.value} not taken yet ({answer.error or answer.status})",
            retry_after=wait,
            code="callback_retry",
        )


def _outcome(
    msg: PublishStatusChanged,
    answer: CallbackAnswer,
    *,
    first: datetime,
    attempts: int,
    now: datetime,
    policy: CallbackPolicy,
) -> tuple[CallbackDelivery, float | None]:
    """The delivery record after this attempt, and the wait before the next one (None: finished)."""
    delivery = CallbackDelivery(
        state=msg.state,
        attempts=attempts,
        first_attempt_at=first,
        last_attempt_at=now,
        last_status=answer.status,
        last_error=answer.error,
    )
    if answer.verdict == "delivered":
        return delivery.model_copy(update={"outcome": "delivered", "delivered_at": now}), None
    wait = policy.backoff.sample(attempts - 1)
    if answer.verdict == "refused" or (now - first).total_seconds() + wait > policy.retry_seconds:
        return delivery.model_copy(update={"outcome": "failed", "gave_up_at": now}), None
    return delivery, wait
