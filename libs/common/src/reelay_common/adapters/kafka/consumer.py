"""Kafka for every service: topics, an acknowledged JSON publisher, and the consumer loop that turns a
handler's outcome into commit, retry or dead letter.

Outcomes of one record (the only place they are decided: docs/architecture.md, "Habits" 6):
- handler returns, or raises SkipError        -> commit offset+1
- undecodable record, or PermanentError       -> DeadLetter on `<topic>.dlq`, on_dead_letter, commit
- RetryableError                              -> back off (retry_after when given), retry, no commit
- any other exception                         -> retried up to max_unexpected_failures, then dead letter
Records of one key are handled in order, one at a time; different keys of a partition concurrently, up
to `max_in_flight_per_partition` (`keyed.KeyedPartition`), and partitions concurrently. A commit never
passes an unfinished record: it covers the finished prefix of each partition (`keyed.OffsetLedger`).
A partition is paused while `max_buffered_per_partition` of its records are held and polling goes on,
so long uploads never exceed max_poll_interval_ms."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
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

from reelay_common.adapters.kafka.availability import KafkaAvailability, kafka_availability
from reelay_common.adapters.kafka.clients import start_client
from reelay_common.adapters.kafka.keyed import Abandoned, KeyedPartition
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


# The ids a dead letter carries: the client's own, and the tenant they belong to.
_LETTER_IDS = ("request_id", "account_id", "tenant_id")


def _ids_from_raw(value: bytes | None) -> dict[str, str]:
    """The ids of a raw JSON record (`_LETTER_IDS`), best effort (for dead letters of bad records)."""
    if not value:
        return {}
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k in _LETTER_IDS if isinstance(v := data.get(k), str) and v}


def _ids_from_message(message: object) -> dict[str, str]:
    out: dict[str, str] = {}
    for k in (*_LETTER_IDS, "publish_id"):
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
        max_in_flight_per_partition: int = 16,
        max_buffered_per_partition: int = 1000,
        client_id: str | None = None,
        poll_timeout_ms: int = 500,
        availability: KafkaAvailability | None = None,
        availability_probe_seconds: float = 2.0,
        **consumer_overrides: Any,
    ) -> None:
        if max_unexpected_failures < 1:
            raise ValueError("max_unexpected_failures must be at least 1")
        if max_in_flight_per_partition < 1 or max_buffered_per_partition < max_in_flight_per_partition:
            raise ValueError(
                "a partition needs 1 <= max_in_flight_per_partition <= max_buffered_per_partition"
            )
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
        # Different keys (accounts) of one partition at once, each key one record at a time.
        self._max_in_flight = max_in_flight_per_partition
        # Records held per partition (running, waiting for their key, finished after a gap) before
        # the partition is paused: bounds memory while one key waits and the others flow.
        self._max_buffered = max_buffered_per_partition
        self._client_id = client_id or f"reelay-{group_id}"
        self._poll_timeout_ms = poll_timeout_ms
        # Kafka away is logged once, and back once (not per aiokafka reconnect attempt); while it is
        # away the loop probes it every `availability_probe_seconds` to see it back.
        self._availability = availability or kafka_availability()
        self._probe_every = availability_probe_seconds
        # Tests pass small session/heartbeat/max_poll_interval values through here.
        self._consumer_overrides = consumer_overrides
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[TopicPartition, KeyedPartition[ConsumerRecord]] = {}
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
            await self._cancel_partitions(consumer, list(self._partitions), reason="shutdown")
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
        last_probe = 0.0
        while not stop.is_set():
            if self._failure is not None:
                raise RuntimeError("a partition worker crashed") from self._failure
            try:
                batch = await consumer.getmany(timeout_ms=self._poll_timeout_ms)
            except KafkaError as exc:
                failures += 1
                self._availability.unavailable(f"poll: {exc!r}")
                await sleep_unless_stopped(stop, self._retry.delay(failures))
                continue
            failures = 0
            self._last_poll = time.monotonic()
            if any(batch.values()):
                self._availability.available()
            elif self._availability.down and self._last_poll - last_probe >= self._probe_every:
                last_probe = self._last_poll
                await self._probe(consumer)
            for tp, records in batch.items():
                if records:
                    self._dispatch(consumer, tp, records)

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        """One metadata round trip (bounded): Kafka is back when it succeeds."""
        try:
            await asyncio.wait_for(consumer.topics(), timeout=5.0)
        except (KafkaError, TimeoutError):
            return  # still away; aiokafka's own errors about it are held back
        self._availability.available()

    def _dispatch(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]
    ) -> None:
        if tp not in consumer.assignment():
            return  # revoked between fetch and dispatch: the new owner will read these records
        work = self._partitions.get(tp)
        if work is None:
            work = KeyedPartition[ConsumerRecord](
                name=f"{tp.topic}-{tp.partition}",
                limit=self._max_in_flight,
                offset_of=lambda record: int(record.offset),
                # The key orders: one account's uploads one at a time (docs/architecture.md, "Topics").
                key_of=lambda record: record.key,
                process=lambda record: self._process(consumer, record),
                commit=lambda offset: self._commit(consumer, tp, offset),
                on_crash=self._worker_crashed,
                on_progress=lambda: self._progress(consumer, tp),
            )
            self._partitions[tp] = work
        work.add(records)
        self._progress(consumer, tp)

    def _progress(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        """After records arrived or finished: the lag, and whether the partition may fetch more."""
        work = self._partitions.get(tp)
        if work is None:
            return
        next_offset = work.ledger.first_unfinished()
        if next_offset is None:
            next_offset = work.ledger.committable()
        if next_offset is not None:
            _set_lag(consumer, tp, next_offset)
        # Paused while it holds enough; polling goes on, so the member is not evicted meanwhile.
        with contextlib.suppress(IllegalStateError):
            if work.held >= self._max_buffered or self._stopping.is_set():
                consumer.pause(tp)
            else:
                consumer.resume(tp)

    def _worker_crashed(self, exc: BaseException) -> None:
        if self._failure is None:
            # A bug in the loop itself, not a handler error: stop polling and surface it from run().
            self._failure = exc
            log.error("kafka_worker_crashed", error=repr(exc), exc_info=exc)

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        """Stop taking records; give in-flight ones `shutdown_grace_seconds`, keep the membership alive."""
        self._stopping.set()
        for work in self._partitions.values():
            work.stop_starting()
        with contextlib.suppress(IllegalStateError):
            consumer.pause(*consumer.assignment())
        deadline = time.monotonic() + self._grace
        while True:
            remaining = deadline - time.monotonic()
            tasks = [task for work in self._partitions.values() for task in work.tasks()]
            if not tasks or remaining <= 0:
                break
            await asyncio.wait(tasks, timeout=min(1.0, remaining))
            # Keeps the consumer "polling" so the group does not evict it during the grace period.
            with contextlib.suppress(KafkaError):
                await consumer.getmany(timeout_ms=0)

    async def _cancel_partitions(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], *, reason: str
    ) -> None:
        """Cancel the work in flight on `tps`, then commit once what finished before it (never more)."""
        works = {tp: work for tp in tps if (work := self._partitions.pop(tp, None)) is not None}
        # All at once: each wait is bounded, and a rebalance must not wait for them one by one.
        counts = await asyncio.gather(*(work.cancel() for work in works.values()))
        cancelled = [str(tp) for tp, n in zip(works, counts, strict=True) if n]
        owed = {
            tp: target for tp, work in works.items() if (target := work.uncommitted_finished()) is not None
        }
        if owed:
            try:
                await consumer.commit(owed)
            except KafkaError as exc:  # one try: the records after the last commit are redelivered
                log.warning(
                    "final_commit_failed", offsets={str(tp): o for tp, o in owed.items()}, error=repr(exc)
                )
            else:
                for tp, target in owed.items():
                    works[tp].mark_committed(target)
                    _set_lag(consumer, tp, target)
        if cancelled:
            log.warning("kafka_work_cancelled", reason=reason, partitions=cancelled)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Whatever is in flight for these partitions now belongs to another consumer: never commit it.
        if revoked:
            log.info("kafka_partitions_revoked", partitions=sorted(str(tp) for tp in revoked))
        consumer = self._consumer
        if consumer is not None:
            await self._cancel_partitions(
                consumer, [tp for tp in self._partitions if tp in revoked], reason="revoked"
            )
        for tp in revoked:
            # Another member reports these partitions now.
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(tp.topic, str(tp.partition))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._availability.available()  # the group coordinator answered
        log.info("kafka_partitions_assigned", partitions=sorted(str(tp) for tp in assigned))

    # ------------------------------------------------------------------------------------- one record

    async def _process(self, consumer: AIOKafkaConsumer, record: ConsumerRecord) -> bool:
        """Decode and handle one record to its outcome; True once finished (raises Abandoned if not)."""
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
                return True  # finished: KeyedPartition commits it once every record before it is
            except Abandoned:
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
        """Call the handler until its outcome is final (or raise Abandoned); counts attempts."""
        unexpected = 0
        retries = 0
        ids = {k: v for k, v in _ids_from_message(message).items() if k in _LETTER_IDS}
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
            tenant_id=ids.get("tenant_id"),
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

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        """Commit `offset` (the finished prefix) for `tp`, retrying while Kafka is away."""
        retries = 0
        while True:
            try:
                await consumer.commit({tp: offset})
                self._availability.available()
                return
            except (CommitFailedError, IllegalStateError) as exc:
                # The partition moved to another member: it will redo these records. Nothing to do here.
                log.warning("commit_refused_partition_moved", error=repr(exc))
                raise Abandoned from exc
            except KafkaError as exc:
                delay = self._retry.delay(retries)
                retries += 1
                self._availability.unavailable(f"commit: {exc!r}")  # logged once per outage
                log.debug("commit_failed", error=repr(exc), delay_s=delay)
                await self._backoff(delay)

    async def _backoff(self, delay: float) -> None:
        """Sleep `delay` (with a little jitter); raise Abandoned if the loop starts stopping."""
        if await sleep_unless_stopped(self._stopping, self._retry.jittered(delay)):
            raise Abandoned
