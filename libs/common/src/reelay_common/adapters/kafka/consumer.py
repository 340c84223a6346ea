"""Kafka for every service: topics, an acknowledged JSON publisher, and the consumer loop that turns a
handler's outcome into commit, retry or dead letter.

Outcomes of one record (the only place they are decided: docs/architecture.md, "Habits" 6):
- handler returns, or raises SkipError        -> commit offset+1
- undecodable record, or PermanentError       -> DeadLetter on `<topic>.dlq`, on_dead_letter, commit
- RetryableError                              -> back off (retry_after when given), retry, no commit
- any other exception                         -> retried up to max_unexpected_failures, then dead letter
Records of one partition are handled in order, partitions concurrently; a partition is paused while
its records are handled and polling continues, so long uploads never exceed max_poll_interval_ms."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
)
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from reelay_common.adapters.kafka.clients import start_client
from reelay_common.domain.errors import (
    PermanentError,
    RateLimitedError,
    ReelayError,
    RetryableError,
    SkipError,
)
from reelay_common.domain.messages import DeadLetter, dlq_topic
from reelay_common.domain.rules import Backoff
from reelay_common.domain.timing import sleep_unless_stopped
from reelay_common.logging import bind_learned, get_logger, unit_of_work
from reelay_common.tracing import consumer_span

T = TypeVar("T")

log = get_logger("reelay_common.adapters.kafka.consumer")


RECORDS = Counter(
    "reelay_kafka_records_total",
    "Kafka records finished by the consumer loop, by outcome.",
    ["topic", "outcome"],
)


RECORD_RETRIES = Counter(
    "reelay_kafka_record_retries_total",
    "Handler attempts that will be retried, by kind of failure.",
    ["topic", "kind"],
)


RECORD_SECONDS = Histogram(
    "reelay_kafka_record_duration_seconds",
    "Time from the first handler attempt to the record's outcome.",
    ["topic", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900),
)


# The partition label is bounded by the topic's partition count; the HPA alternative of deploy/k8s
# (components/hpa-workers) scales the workers on this gauge.
CONSUMER_LAG = Gauge(
    "reelay_kafka_consumer_lag_records",
    "Records of a partition this consumer holds that are not handled yet (high watermark minus the "
    "next offset to handle), updated as records arrive and are committed.",
    ["topic", "partition"],
)


def _set_lag(consumer: AIOKafkaConsumer, tp: TopicPartition, next_offset: int) -> None:
    highwater = consumer.highwater(tp)
    if highwater is not None:
        CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, highwater - next_offset))


@dataclass(frozen=True)
class RecordContext:
    """Where a record came from, handed to the handler beside the decoded message."""

    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp_ms: int


class DeadLetterPublisher(Protocol):
    """What the consumer loop needs to dead-letter a record (KafkaPublisher; fakes in tests)."""

    async def publish_raw(self, topic: str, value: bytes, *, key: bytes | None) -> None: ...


Outcome = Literal["handled", "skipped", "dead_lettered", "abandoned", "cancelled"]


@dataclass
class _Progress:
    """How far one record got: its outcome so far and the handler attempts made."""

    outcome: Outcome = "abandoned"
    attempts: int = 0


class _Abandoned(Exception):
    """The loop is stopping: leave the record uncommitted so it is redelivered."""


def _error_kind(exc: BaseException) -> str:
    # InvalidInputError -> invalid_input: a stable reason when an error carries no code.
    name = type(exc).__name__.removesuffix("Error") or type(exc).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _describe_decode_error(exc: Exception) -> tuple[str, str]:
    """(reason, clear error text) for a record that could not be decoded."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            return "invalid_json", "; ".join(str(e["msg"]) for e in errors)
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors]
        return "validation_failed", "; ".join(parts)
    if isinstance(exc, UnicodeDecodeError | json.JSONDecodeError):
        return "invalid_json", str(exc)
    if isinstance(exc, ValueError | TypeError):
        return "undecodable", str(exc)
    return "undecodable", f"{type(exc).__name__}: {exc}"


def _ids_from_raw(value: bytes | None) -> dict[str, str]:
    """request_id/account_id from a raw JSON record, best effort (for dead letters of bad records)."""
    if not value:
        return {}
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k in ("request_id", "account_id") if isinstance(v := data.get(k), str) and v}


def _ids_from_message(message: object) -> dict[str, str]:
    out: dict[str, str] = {}
    for k in ("request_id", "account_id", "publish_id"):
        v = getattr(message, k, None)
        if isinstance(v, str) and v:
            out[k] = v
    return out


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, loop: ConsumerLoop[Any]) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._loop._on_assigned(set(assigned))


class ConsumerLoop(Generic[T]):
    """Consumes one topic in a group: decode -> handler -> commit / retry / dead letter."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        topic: str,
        decode: Callable[[bytes], T],
        handle: Callable[[T, RecordContext], Awaitable[None]],
        publisher: DeadLetterPublisher,
        on_dead_letter: Callable[[DeadLetter], Awaitable[None]] | None = None,
        max_unexpected_failures: int = 5,
        retry_backoff_initial: float = 0.5,
        retry_backoff_max: float = 30.0,
        shutdown_grace_seconds: float = 30.0,
        client_id: str | None = None,
        poll_timeout_ms: int = 500,
        **consumer_overrides: Any,
    ) -> None:
        if max_unexpected_failures < 1:
            raise ValueError("max_unexpected_failures must be at least 1")
        self._bootstrap_servers = bootstrap_servers
        self._group_id = group_id
        self._topic = topic
        self._decode = decode
        self._handle = handle
        self._publisher = publisher
        self._on_dead_letter = on_dead_letter
        self._max_unexpected = max_unexpected_failures
        # A little jitter, so consumers that failed together do not retry in lockstep.
        self._retry = Backoff(retry_backoff_initial, retry_backoff_max, jitter=0.1)
        self._grace = shutdown_grace_seconds
        self._client_id = client_id or f"reelay-{group_id}"
        self._poll_timeout_ms = poll_timeout_ms
        # Tests pass small session/heartbeat/max_poll_interval values through here.
        self._consumer_overrides = consumer_overrides
        self._consumer: AIOKafkaConsumer | None = None
        self._workers: dict[TopicPartition, tuple[asyncio.Task[None], deque[ConsumerRecord]]] = {}
        self._stopping = asyncio.Event()
        self._running = False
        self._failure: BaseException | None = None
        self._last_poll = 0.0

    # -------------------------------------------------------------------------------------- public

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; then let in-flight records finish (bounded) and leave the group."""
        if self._running:
            raise RuntimeError("ConsumerLoop.run is already running")
        self._stopping.clear()
        self._failure = None
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self._consumer_overrides,
        )
        await start_client(consumer, what="consumer")
        self._consumer = consumer
        consumer.subscribe([self._topic], listener=_RebalanceListener(self))
        self._running = True
        self._last_poll = time.monotonic()
        log.info("consumer_started", topic=self._topic, group_id=self._group_id)
        try:
            await self._poll_until(stop, consumer)
            await self._drain(consumer)
        finally:
            self._stopping.set()
            await self._cancel_workers(list(self._workers), reason="shutdown")
            self._running = False
            self._consumer = None
            await consumer.stop()
            log.info("consumer_stopped", topic=self._topic, group_id=self._group_id)

    def is_healthy(self) -> bool:
        """True while the loop runs, polls, and no worker has crashed."""
        return (
            self._running
            and self._failure is None
            and time.monotonic() - self._last_poll < max(60.0, 4 * self._poll_timeout_ms / 1000)
        )

    def has_assignment(self) -> bool:
        """True while the group has given this consumer at least one partition of its topic.

        A replica beyond the partition count (or one waiting for a rebalance) consumes nothing:
        its readiness says so, so that an operator sees it rather than a silently idle pod."""
        consumer = self._consumer
        if consumer is None or not self._running:
            return False
        try:
            return bool(consumer.assignment())
        except IllegalStateError:
            return False  # not subscribed (yet): nothing assigned

    # -------------------------------------------------------------------------------------- polling

    async def _poll_until(self, stop: asyncio.Event, consumer: AIOKafkaConsumer) -> None:
        failures = 0
        while not stop.is_set():
            if self._failure is not None:
                raise RuntimeError("a partition worker crashed") from self._failure
            try:
                batch = await consumer.getmany(timeout_ms=self._poll_timeout_ms)
            except KafkaError as exc:
                failures += 1
                log.warning("kafka_poll_failed", error=repr(exc), failures=failures)
                await sleep_unless_stopped(stop, self._retry.delay(failures))
                continue
            failures = 0
            self._last_poll = time.monotonic()
            for tp, records in batch.items():
                if records:
                    self._dispatch(consumer, tp, records)

    def _dispatch(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]
    ) -> None:
        # Paused until its worker has finished these records; the rest of the topic keeps flowing.
        try:
            consumer.pause(tp)
        except IllegalStateError:
            return  # revoked between fetch and dispatch: the new owner will read these records
        current = self._workers.get(tp)
        if current is not None and not current[0].done():
            current[1].extend(records)
            _set_lag(consumer, tp, current[1][0].offset if current[1] else records[0].offset)
            return
        _set_lag(consumer, tp, records[0].offset)
        pending: deque[ConsumerRecord] = deque(records)
        task = asyncio.create_task(
            self._work(consumer, tp, pending), name=f"kafka-worker-{tp.topic}-{tp.partition}"
        )
        task.add_done_callback(self._worker_done)
        self._workers[tp] = (task, pending)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._failure is None:
            # A bug in the loop itself, not a handler error: stop polling and surface it from run().
            self._failure = exc
            log.error("kafka_worker_crashed", error=repr(exc), exc_info=exc)

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        """Stop taking records; give in-flight ones `shutdown_grace_seconds`, keep the membership alive."""
        self._stopping.set()
        with contextlib.suppress(IllegalStateError):
            consumer.pause(*consumer.assignment())
        deadline = time.monotonic() + self._grace
        while True:
            tasks = [t for t, _ in self._workers.values() if not t.done()]
            remaining = deadline - time.monotonic()
            if not tasks or remaining <= 0:
                break
            await asyncio.wait(tasks, timeout=min(1.0, remaining))
            # Keeps the consumer "polling" so the group does not evict it during the grace period.
            with contextlib.suppress(KafkaError):
                await consumer.getmany(timeout_ms=0)

    async def _cancel_workers(self, tps: list[TopicPartition], *, reason: str) -> None:
        tasks: list[asyncio.Task[None]] = []
        for tp in tps:
            entry = self._workers.pop(tp, None)
            if entry is not None and not entry[0].done():
                entry[0].cancel()
                tasks.append(entry[0])
        if tasks:
            log.warning("kafka_work_cancelled", reason=reason, partitions=[str(tp) for tp in tps])
            # Bounded: a handler that swallows cancellation must not block a rebalance forever.
            await asyncio.wait(tasks, timeout=10.0)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Whatever is in flight for these partitions now belongs to another consumer: never commit it.
        if revoked:
            log.info("kafka_partitions_revoked", partitions=sorted(str(tp) for tp in revoked))
        await self._cancel_workers([tp for tp in self._workers if tp in revoked], reason="revoked")
        for tp in revoked:
            # Another member reports these partitions now.
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(tp.topic, str(tp.partition))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("kafka_partitions_assigned", partitions=sorted(str(tp) for tp in assigned))

    # ------------------------------------------------------------------------------------- one record

    async def _work(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, pending: deque[ConsumerRecord]
    ) -> None:
        while pending:
            if self._stopping.is_set():
                return
            try:
                await self._process(consumer, pending[0])
            except _Abandoned:
                # Stopping, or the partition moved: the records left are someone else's (or redelivered).
                if self._workers.get(tp, (None,))[0] is asyncio.current_task():
                    del self._workers[tp]
                return
            pending.popleft()
        # No await between the emptiness check and these lines, so _dispatch cannot race us.
        self._workers.pop(tp, None)
        if not self._stopping.is_set():
            with contextlib.suppress(IllegalStateError):
                consumer.resume(tp)

    async def _process(self, consumer: AIOKafkaConsumer, record: ConsumerRecord) -> None:
        ctx = RecordContext(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", errors="replace") if record.key is not None else None,
            timestamp_ms=record.timestamp,
        )
        started = time.monotonic()
        progress = _Progress()
        # Bound once for everything logged about this record, the summary line included.
        with (
            consumer_span(record.topic, record.partition, record.offset, record.headers),
            unit_of_work(topic=record.topic, partition=record.partition, offset=record.offset),
        ):
            try:
                try:
                    message = self._decode(record.value if record.value is not None else b"")
                except Exception as exc:
                    reason, text = _describe_decode_error(exc)
                    ids = _ids_from_raw(record.value)
                    bind_learned(**ids)
                    await self._dead_letter(record, reason=reason, error=text, ids=ids)
                    progress.outcome = "dead_lettered"
                else:
                    bind_learned(**_ids_from_message(message))
                    progress.outcome = await self._handle_with_retries(record, message, ctx, progress)
                await self._commit(consumer, record)
            except _Abandoned:
                progress.outcome = "abandoned"
                raise
            except asyncio.CancelledError:
                progress.outcome = "cancelled"
                raise
            finally:
                seconds = time.monotonic() - started
                RECORDS.labels(topic=record.topic, outcome=progress.outcome).inc()
                RECORD_SECONDS.labels(topic=record.topic, outcome=progress.outcome).observe(seconds)
                log.info(
                    "record_processed",
                    outcome=progress.outcome,
                    attempts=progress.attempts,
                    duration_ms=round(seconds * 1000, 1),
                )

    async def _handle_with_retries(
        self, record: ConsumerRecord, message: T, ctx: RecordContext, progress: _Progress
    ) -> Outcome:
        """Call the handler until its outcome is final (or raise _Abandoned); counts attempts."""
        unexpected = 0
        retries = 0
        ids = {k: v for k, v in _ids_from_message(message).items() if k in ("request_id", "account_id")}
        while True:
            progress.attempts += 1
            attempts = progress.attempts
            try:
                await self._handle(message, ctx)
                return "handled"
            except SkipError as exc:
                log.info("record_skipped", reason=exc.code or _error_kind(exc), message=exc.message)
                return "skipped"
            except PermanentError as exc:
                await self._dead_letter(
                    record, reason=exc.code or _error_kind(exc), error=f"{type(exc).__name__}: {exc}", ids=ids
                )
                return "dead_lettered"
            except RetryableError as exc:
                delay = self._retry.delay(retries)
                if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
                    delay = max(0.0, exc.retry_after)
                retries += 1
                RECORD_RETRIES.labels(topic=record.topic, kind="retryable").inc()
                log.warning(
                    "record_retry_scheduled",
                    error=type(exc).__name__,
                    code=exc.code,
                    message=exc.message,
                    attempt=attempts,
                    delay_s=round(delay, 3),
                )
                await self._backoff(delay)
            except Exception as exc:
                unexpected += 1
                if unexpected >= self._max_unexpected:
                    log.error("record_handler_failed", attempt=attempts, exc_info=exc)
                    await self._dead_letter(
                        record,
                        reason="handler_failed",
                        error=f"{type(exc).__name__}: {exc}"
                        if not isinstance(exc, ReelayError)
                        else exc.message,
                        ids=ids,
                    )
                    return "dead_lettered"
                RECORD_RETRIES.labels(topic=record.topic, kind="unexpected").inc()
                delay = self._retry.delay(retries)
                retries += 1
                log.warning(
                    "record_handler_error",
                    error=f"{type(exc).__name__}: {exc}",
                    attempt=attempts,
                    failures=unexpected,
                    delay_s=round(delay, 3),
                    exc_info=exc,
                )
                await self._backoff(delay)

    async def _dead_letter(
        self, record: ConsumerRecord, *, reason: str, error: str, ids: dict[str, str]
    ) -> None:
        letter = DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", errors="replace") if record.key is not None else None,
            value=(record.value or b"").decode("utf-8", errors="replace"),
            reason=reason,
            error=error,
            request_id=ids.get("request_id"),
            account_id=ids.get("account_id"),
        )
        retries = 0
        while True:
            try:
                await self._publisher.publish_raw(
                    dlq_topic(record.topic), letter.model_dump_json().encode(), key=record.key
                )
                break
            except (RetryableError, KafkaError, RuntimeError) as exc:
                # Never commit a record whose dead letter is not safely on Kafka.
                delay = self._retry.delay(retries)
                retries += 1
                log.warning("dead_letter_publish_failed", error=repr(exc), delay_s=delay)
                await self._backoff(delay)
        log.warning("record_dead_lettered", reason=reason, error=error)
        if self._on_dead_letter is not None:
            await self._call_dead_letter_hook(letter)

    async def _call_dead_letter_hook(self, letter: DeadLetter) -> None:
        hook = self._on_dead_letter
        assert hook is not None
        failures = 0
        retries = 0
        while True:
            try:
                await hook(letter)
                return
            except RetryableError as exc:
                log.warning("dead_letter_hook_retry", error=type(exc).__name__, message=exc.message)
            except Exception as exc:
                failures += 1
                if failures >= self._max_unexpected:
                    # The letter is on the DLQ already; an operator can replay it from there.
                    log.error("dead_letter_hook_failed", exc_info=exc)
                    return
                log.warning("dead_letter_hook_error", error=f"{type(exc).__name__}: {exc}")
            await self._backoff(self._retry.delay(retries))
            retries += 1

    async def _commit(self, consumer: AIOKafkaConsumer, record: ConsumerRecord) -> None:
        tp = TopicPartition(record.topic, record.partition)
        retries = 0
        while True:
            try:
                await consumer.commit({tp: record.offset + 1})
                _set_lag(consumer, tp, record.offset + 1)
                return
            except (CommitFailedError, IllegalStateError) as exc:
                # The partition moved to another member: it will redo this record. Nothing to do here.
                log.warning("commit_refused_partition_moved", error=repr(exc))
                raise _Abandoned from exc
            except KafkaError as exc:
                delay = self._retry.delay(retries)
                retries += 1
                log.warning("commit_failed", error=repr(exc), delay_s=delay)
                await self._backoff(delay)

    async def _backoff(self, delay: float) -> None:
        """Sleep `delay` (with a little jitter); raise _Abandoned if the loop starts stopping."""
        if await sleep_unless_stopped(self._stopping, self._retry.jittered(delay)):
            raise _Abandoned
