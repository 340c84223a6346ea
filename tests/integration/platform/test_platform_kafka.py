"""The consumer loop on a real Kafka: what each handler outcome does to commits, retries and dead letters."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
import structlog.testing
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from reelay_common.adapters.kafka.availability import KafkaAvailability
from reelay_common.adapters.kafka.consumer import ConsumerLoop, RecordContext
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.adapters.kafka.topics import ensure_topics
from reelay_common.domain.errors import (
    InvalidInputError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SkipError,
)
from reelay_common.domain.messages import DeadLetter, UploadRequested, dlq_topic
from reelay_common.tracing import current_trace_id
from reelay_testing.kafka import read_topic
from reelay_testing.waiting import eventually

from tests.conftest import UniqueTopic

# Small timeouts so groups form and rebalance in about a second (the broker's minimum session is 6 s).
FAST: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "metadata_max_age_ms": 5000}


def request(n: int, *, account: str = "acct-1") -> UploadRequested:
    return UploadRequested.model_validate(
        {
            "request_id": f"req-{n}",
            "account_id": account,
            "mode": "inbox",
            "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
        }
    )


async def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> dict[int, int]:
    """The group's committed offsets by partition (-1: nothing committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp.partition: (offsets[tp].offset if tp in offsets else -1) for tp in tps}
    finally:
        await admin.close()


@dataclass
class Seen:
    """What a test handler observed."""

    started: list[tuple[str, int, int]] = field(default_factory=list)
    finished: list[tuple[str, int, int]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    def ids(self, which: str = "finished") -> list[str]:
        return [r for r, _, _ in getattr(self, which)]


Handler = Callable[[UploadRequested, RecordContext], Awaitable[None]]


@dataclass
class LoopWorld:
    bootstrap: str
    publisher: KafkaPublisher
    topic: str
    group: str = field(default_factory=lambda: f"g-{uuid.uuid4().hex[:10]}")
    seen: Seen = field(default_factory=Seen)

    def loop(self, handle: Handler, **kwargs: Any) -> ConsumerLoop[UploadRequested]:
        async def on_dead_letter(letter: DeadLetter) -> None:
            self.seen.dead.append(letter)

        options: dict[str, Any] = {
            "retry_backoff_initial": 0.05,
            "retry_backoff_max": 0.2,
            "shutdown_grace_seconds": 5.0,
            "poll_timeout_ms": 100,
            **FAST,
        }
        options.update(kwargs)
        return ConsumerLoop(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            topic=self.topic,
            decode=UploadRequested.model_validate_json,
            handle=handle,
            publisher=self.publisher,
            on_dead_letter=on_dead_letter,
            **options,
        )

    @asynccontextmanager
    async def running(self, loop: ConsumerLoop[UploadRequested]) -> AsyncIterator[asyncio.Event]:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        try:
            yield stop
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)

    async def committed(self, partitions: int = 1) -> dict[int, int]:
        return await committed(self.bootstrap, self.group, self.topic, partitions)

    async def committed_reaches(self, expected: dict[int, int], *, partitions: int = 1) -> None:
        """Wait (bounded) until the group's committed offsets are `expected`."""

        async def reached() -> bool:
            return await self.committed(partitions) == expected

        await eventually(reached, timeout=30.0, interval=0.1, what=f"committed offsets {expected}")


@pytest.fixture
async def world(
    kafka_bootstrap_servers: str, kafka_publisher: KafkaPublisher, unique_topic: UniqueTopic
) -> LoopWorld:
    return LoopWorld(kafka_bootstrap_servers, kafka_publisher, await unique_topic("reelay.test.loop"))


def recording(seen: Seen) -> Handler:
    async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
        seen.started.append((msg.request_id, ctx.partition, ctx.offset))
        seen.finished.append((msg.request_id, ctx.partition, ctx.offset))

    return handle


class TestEnsureTopics:
    async def test_creates_the_topic_and_its_dead_letter_topic_idempotently(
        self, kafka_bootstrap_servers: str
    ) -> None:
        name = f"reelay.test.topics.{uuid.uuid4().hex[:10]}"
        for _ in range(2):
            await ensure_topics(kafka_bootstrap_servers, [name], partitions=3, replication_factor=1)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers)
        await admin.start()
        try:
            described = {t["topic"]: t for t in await admin.describe_topics([name, dlq_topic(name)])}
        finally:
            await admin.close()
        assert len(described[name]["partitions"]) == 3
        assert len(described[dlq_topic(name)]["partitions"]) == 3

    async def test_concurrent_calls_do_not_fail_on_already_existing_topics(
        self, kafka_bootstrap_servers: str
    ) -> None:
        name = f"reelay.test.topics.{uuid.uuid4().hex[:10]}"
        await asyncio.gather(
            *(
                ensure_topics(kafka_bootstrap_servers, [name], partitions=1, replication_factor=1)
                for _ in range(4)
            )
        )


class TestRoundTrip:
    async def test_delivers_published_messages_in_order_and_commits_each(self, world: LoopWorld) -> None:
        for n in range(3):
            await world.publisher.publish(world.topic, request(n), key="acct-1")
        async with world.running(world.loop(recording(world.seen))):
            await eventually(lambda: len(world.seen.finished) == 3, what="three records handled")
            await world.committed_reaches({0: 3})
        assert world.seen.ids() == ["req-0", "req-1", "req-2"]

    async def test_hands_the_handler_where_the_record_came_from(self, world: LoopWorld) -> None:
        contexts: list[RecordContext] = []

        async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
            contexts.append(ctx)

        await world.publisher.publish(world.topic, request(1), key="acct-9")
        async with world.running(world.loop(handle)):
            await eventually(lambda: len(contexts) == 1)
        (ctx,) = contexts
        assert (ctx.topic, ctx.partition, ctx.offset, ctx.key) == (world.topic, 0, 0, "acct-9")
        assert ctx.timestamp_ms > 0

    async def test_reports_healthy_while_running_and_not_after(self, world: LoopWorld) -> None:
        loop = world.loop(recording(world.seen))
        assert not loop.is_healthy()
        async with world.running(loop):
            await eventually(loop.is_healthy, what="loop healthy")
        assert not loop.is_healthy()

    async def test_continues_the_producers_trace_around_the_handler(self, world: LoopWorld) -> None:
        exporter = in_memory_spans()
        seen: list[str | None] = []

        async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
            seen.append(current_trace_id())

        with trace.get_tracer("test").start_as_current_span("ingest request") as span:
            produced_trace = format(span.get_span_context().trace_id, "032x")
            await world.publisher.publish(world.topic, request(1), key="acct-1")
        async with world.running(world.loop(handle)):
            await eventually(lambda: len(seen) == 1, what="the record handled")
        assert seen == [produced_trace]
        spans = exporter.get_finished_spans()
        [producer] = [s for s in spans if s.name == f"{world.topic} publish"]
        [consumer] = [s for s in spans if s.name == f"{world.topic} process"]
        assert (producer.kind, consumer.kind) == (trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER)
        assert format(consumer.context.trace_id, "032x") == produced_trace
        # ingest request -> its publish (the record's traceparent) -> the consumer's handling
        assert producer.parent is not None
        assert producer.parent.span_id == span.get_span_context().span_id
        assert consumer.parent is not None
        assert consumer.parent.span_id == producer.context.span_id

    async def test_exports_the_lag_of_each_partition_it_holds(self, world: LoopWorld) -> None:
        release = asyncio.Event()

        async def slow(msg: UploadRequested, ctx: RecordContext) -> None:
            await release.wait()

        def lag() -> float | None:
            return REGISTRY.get_sample_value(
                "reelay_kafka_consumer_lag_records", {"topic": world.topic, "partition": "0"}
            )

        for i in range(3):
            await world.publisher.publish(world.topic, request(i), key="acct-1")
        async with world.running(world.loop(slow)):
            # The first record is being handled, none committed: three records wait.
            await eventually(lambda: lag() == 3, what="a lag of 3")
            release.set()
            await eventually(lambda: lag() == 0, what="no lag once all are committed")

    async def test_reports_an_assignment_only_while_it_holds_a_partition(self, world: LoopWorld) -> None:
        # One partition, two members of the group: exactly one holds it, the other is idle (and
        # a worker's readiness says so); alone again, the survivor holds it.
        first, second = world.loop(recording(world.seen)), world.loop(recording(world.seen))
        assert not first.has_assignment()
        async with world.running(first):
            await eventually(first.has_assignment, what="the first member assigned")
            async with world.running(second):
                await eventually(second.is_healthy, what="the second member polling")
                await eventually(
                    lambda: [first.has_assignment(), second.has_assignment()].count(True) == 1,
                    what="exactly one member assigned",
                    timeout=30,
                )
                assigned_together = [first.has_assignment(), second.has_assignment()]
            assert not second.has_assignment()
            await eventually(first.has_assignment, what="the survivor assigned again", timeout=30)
        assert assigned_together.count(True) == 1
        assert not first.has_assignment()


_SPANS: InMemorySpanExporter | None = None


def in_memory_spans() -> InMemorySpanExporter:
    """Tracing on, into memory: the process-wide tracer provider can be set once, so it is shared."""
    global _SPANS
    if _SPANS is None:
        _SPANS = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_SPANS))
        trace.set_tracer_provider(provider)
    return _SPANS


class TestLogging:
    async def test_logs_one_summary_line_per_record_with_its_context(self, world: LoopWorld) -> None:
        capture = structlog.testing.LogCapture()
        structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
        try:
            await world.publisher.publish(world.topic, request(1, account="acct-7"), key="acct-7")
            await world.publisher.publish_raw(world.topic, b"garbage", key=b"acct-7")
            async with world.running(world.loop(recording(world.seen))):
                await eventually(lambda: len(world.seen.dead) == 1, what="garbage dead-lettered")
                await eventually(
                    lambda: sum(e["event"] == "record_processed" for e in capture.entries) == 2,
                    what="two summary lines",
                )
        finally:
            structlog.reset_defaults()
        good, bad = [e for e in capture.entries if e["event"] == "record_processed"]
        assert (good["outcome"], good["request_id"], good["account_id"], good["offset"]) == (
            "handled",
            "req-1",
            "acct-7",
            0,
        )
        assert good["topic"] == world.topic
        assert good["duration_ms"] >= 0
        assert (bad["outcome"], bad["offset"]) == ("dead_lettered", 1)
        assert "request_id" not in bad  # context of one record never leaks into the next


class TestKafkaAvailability:
    async def test_an_idle_loop_probes_kafka_and_says_once_that_it_is_back(self, world: LoopWorld) -> None:
        availability = KafkaAvailability()  # this test's own, fed by hand: the shared broker stays up
        loop = world.loop(recording(world.seen), availability=availability, availability_probe_seconds=0.1)
        with structlog.testing.capture_logs() as captured:
            async with world.running(loop):
                await eventually(loop.has_assignment, what="the partition assigned", timeout=30)
                availability.unavailable("KafkaConnectionError: the broker went away")
                availability.unavailable("KafkaConnectionError: and is still away")
                # No record arrives: only the loop's metadata probe can tell that Kafka answers.
                await eventually(lambda: not availability.down, what="the probe finding Kafka back")
        said = [e["event"] for e in captured if e["event"] in ("kafka_unavailable", "kafka_available_again")]
        assert said == ["kafka_unavailable", "kafka_available_again"]


class TestCommitsOnlyAfterHandling:
    async def test_a_crash_mid_handle_leads_to_redelivery_to_a_new_consumer(self, world: LoopWorld) -> None:
        release = asyncio.Event()

        async def slow(msg: UploadRequested, ctx: RecordContext) -> None:
            world.seen.started.append((msg.request_id, ctx.partition, ctx.offset))
            await release.wait()
            world.seen.finished.append((msg.request_id, ctx.partition, ctx.offset))

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        stop = asyncio.Event()
        task = asyncio.create_task(world.loop(slow).run(stop))
        await eventually(lambda: len(world.seen.started) == 1, what="handler started")
        task.cancel()  # the process dies mid-upload
        with pytest.raises(asyncio.CancelledError):
            await task
        assert world.seen.finished == []
        assert await world.committed() == {0: -1}

        release.set()
        async with world.running(world.loop(slow)):
            await eventually(lambda: len(world.seen.finished) == 1, what="redelivered record handled")
            await world.committed_reaches({0: 1})
        assert world.seen.ids("started") == ["req-1", "req-1"]

    async def test_stop_cancels_a_handler_that_outlives_the_grace_and_leaves_it_uncommitted(
        self, world: LoopWorld
    ) -> None:
        never = asyncio.Event()
        cancelled: list[str] = []

        async def stuck(msg: UploadRequested, ctx: RecordContext) -> None:
            world.seen.started.append((msg.request_id, ctx.partition, ctx.offset))
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled.append(msg.request_id)
                raise

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        async with world.running(world.loop(stuck, shutdown_grace_seconds=0.3)):
            await eventually(lambda: len(world.seen.started) == 1, what="handler started")
        assert cancelled == ["req-1"]
        assert await world.committed() == {0: -1}

        async with world.running(world.loop(recording(world.seen))):
            await eventually(lambda: world.seen.ids() == ["req-1"], what="redelivery after stop")

    async def test_stop_lets_an_in_flight_handler_finish_within_the_grace(self, world: LoopWorld) -> None:
        async def brief(msg: UploadRequested, ctx: RecordContext) -> None:
            world.seen.started.append((msg.request_id, ctx.partition, ctx.offset))
            await asyncio.sleep(0.5)
            world.seen.finished.append((msg.request_id, ctx.partition, ctx.offset))

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        await world.publisher.publish(world.topic, request(2), key="acct-1")
        async with world.running(world.loop(brief, shutdown_grace_seconds=10)):
            await eventually(lambda: len(world.seen.started) == 1, what="handler started")
        # The in-flight record finished and was committed; the next one was not started.
        assert world.seen.ids() == ["req-1"]
        assert await world.committed() == {0: 1}


class TestDeadLetters:
    async def test_malformed_records_are_dead_lettered_and_the_loop_moves_on(self, world: LoopWorld) -> None:
        await world.publisher.publish_raw(world.topic, b"not json at all", key=b"acct-1")
        await world.publisher.publish_raw(
            world.topic, b'{"request_id": "req-bad", "account_id": "acct-1"}', key=b"acct-1"
        )
        await world.publisher.publish(world.topic, request(3), key="acct-1")
        async with world.running(world.loop(recording(world.seen))):
            await eventually(lambda: world.seen.ids() == ["req-3"], what="good record after bad ones")
            await eventually(lambda: len(world.seen.dead) == 2, what="two dead letters")
            await world.committed_reaches({0: 3})

        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in await read_topic(world.bootstrap, dlq_topic(world.topic), until=2)
        ]
        first, second = letters
        assert (first.topic, first.partition, first.offset, first.reason) == (
            world.topic,
            0,
            0,
            "invalid_json",
        )
        assert first.value == "not json at all"
        assert (second.offset, second.reason) == (1, "validation_failed")
        assert "mode" in second.error
        assert "source" in second.error
        assert (second.request_id, second.account_id) == ("req-bad", "acct-1")
        assert [d.offset for d in world.seen.dead] == [0, 1]

    async def test_dead_letters_keep_the_original_key(self, world: LoopWorld) -> None:
        await world.publisher.publish_raw(world.topic, b"[1, 2", key=b"acct-key")
        async with world.running(world.loop(recording(world.seen))):
            await eventually(lambda: len(world.seen.dead) == 1)
        (record,) = await read_topic(world.bootstrap, dlq_topic(world.topic), until=1)
        assert record.key == b"acct-key"

    async def test_a_permanent_error_is_dead_lettered_with_its_code(self, world: LoopWorld) -> None:
        async def refuse(msg: UploadRequested, ctx: RecordContext) -> None:
            if msg.request_id == "req-1":
                raise InvalidInputError("the account is unknown", code="unknown_account")
            world.seen.finished.append((msg.request_id, ctx.partition, ctx.offset))

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        await world.publisher.publish(world.topic, request(2), key="acct-1")
        async with world.running(world.loop(refuse)):
            await eventually(lambda: world.seen.ids() == ["req-2"], what="next record handled")
            await world.committed_reaches({0: 2})
        (letter,) = world.seen.dead
        assert (letter.reason, letter.request_id, letter.account_id, letter.offset) == (
            "unknown_account",
            "req-1",
            "acct-1",
            0,
        )
        assert "the account is unknown" in letter.error

    async def test_a_permanent_error_without_a_code_is_named_by_its_kind(self, world: LoopWorld) -> None:
        async def refuse(msg: UploadRequested, ctx: RecordContext) -> None:
            raise PermanentError("no")

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        async with world.running(world.loop(refuse)):
            await eventually(lambda: len(world.seen.dead) == 1)
        assert world.seen.dead[0].reason == "permanent"

    async def test_unexpected_errors_are_retried_then_dead_lettered(self, world: LoopWorld) -> None:
        attempts: list[int] = []

        async def buggy(msg: UploadRequested, ctx: RecordContext) -> None:
            attempts.append(ctx.offset)
            raise KeyError("bug")

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        async with world.running(world.loop(buggy, max_unexpected_failures=3)):
            await eventually(lambda: len(world.seen.dead) == 1)
            await world.committed_reaches({0: 1})
        assert attempts == [0, 0, 0]
        assert world.seen.dead[0].reason == "handler_failed"
        assert "KeyError" in world.seen.dead[0].error

    async def test_a_skip_commits_without_a_dead_letter(self, world: LoopWorld) -> None:
        async def skip(msg: UploadRequested, ctx: RecordContext) -> None:
            raise SkipError("duplicate")

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        async with world.running(world.loop(skip)):
            await world.committed_reaches({0: 1})
        assert world.seen.dead == []


class TestDeadLetterHook:
    async def test_a_hook_that_fails_retryably_is_retried_before_the_commit(self, world: LoopWorld) -> None:
        calls: list[int] = []
        commits_during_hook: list[dict[int, int]] = []

        async def hook(letter: DeadLetter) -> None:
            calls.append(letter.offset)
            commits_during_hook.append(await world.committed())
            if len(calls) == 1:
                raise RetryableError("Mongo is restarting")

        async def refuse(msg: UploadRequested, ctx: RecordContext) -> None:
            raise InvalidInputError("bad", code="bad_input")

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        loop = ConsumerLoop(
            bootstrap_servers=world.bootstrap,
            group_id=world.group,
            topic=world.topic,
            decode=UploadRequested.model_validate_json,
            handle=refuse,
            publisher=world.publisher,
            on_dead_letter=hook,
            retry_backoff_initial=0.05,
            poll_timeout_ms=100,
            **FAST,
        )
        async with world.running(loop):
            await world.committed_reaches({0: 1})
        assert calls == [0, 0]
        assert commits_during_hook == [{0: -1}, {0: -1}]
        # The dead letter itself was published once, before the hook.
        assert len(await read_topic(world.bootstrap, dlq_topic(world.topic), until=1)) == 1


class TestRetries:
    async def test_a_retryable_error_is_retried_until_it_succeeds_and_not_committed_in_between(
        self, world: LoopWorld
    ) -> None:
        commits_seen_while_failing: list[dict[int, int]] = []

        async def flaky(msg: UploadRequested, ctx: RecordContext) -> None:
            world.seen.started.append((msg.request_id, ctx.partition, ctx.offset))
            if len(world.seen.started) <= 2:
                commits_seen_while_failing.append(await world.committed())
                raise RetryableError("TikTok answered 503")
            world.seen.finished.append((msg.request_id, ctx.partition, ctx.offset))

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        await world.publisher.publish(world.topic, request(2), key="acct-1")
        async with world.running(world.loop(flaky)):
            await eventually(lambda: world.seen.ids() == ["req-1", "req-2"], what="both handled")
            await world.committed_reaches({0: 2})
        assert world.seen.ids("started")[:3] == ["req-1", "req-1", "req-1"]
        assert commits_seen_while_failing == [{0: -1}, {0: -1}]
        assert world.seen.dead == []

    async def test_respects_retry_after_of_a_rate_limit(self, world: LoopWorld) -> None:
        times: list[float] = []

        async def limited(msg: UploadRequested, ctx: RecordContext) -> None:
            times.append(time.monotonic())
            if len(times) == 1:
                raise RateLimitedError("slow down", retry_after=1.0)

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        async with world.running(world.loop(limited, retry_backoff_initial=0.01, retry_backoff_max=0.01)):
            await eventually(lambda: len(times) == 2)
        assert times[1] - times[0] >= 0.85  # retry_after (1 s) minus the jitter allowance

    async def test_stop_during_retries_leaves_the_record_uncommitted(self, world: LoopWorld) -> None:
        async def down(msg: UploadRequested, ctx: RecordContext) -> None:
            world.seen.started.append((msg.request_id, ctx.partition, ctx.offset))
            raise RetryableError("Mongo is down")

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        async with world.running(world.loop(down)):
            await eventually(lambda: len(world.seen.started) >= 2, what="retrying")
        assert await world.committed() == {0: -1}
        assert world.seen.dead == []


class TestPartitions:
    async def test_partitions_are_handled_concurrently_and_each_in_order(
        self, kafka_bootstrap_servers: str, kafka_publisher: KafkaPublisher, unique_topic: UniqueTopic
    ) -> None:
        world = LoopWorld(
            kafka_bootstrap_servers, kafka_publisher, await unique_topic("reelay.test.parts", partitions=2)
        )
        other_partition_done = asyncio.Event()
        by_partition: dict[int, list[str]] = {0: [], 1: []}

        async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
            if ctx.partition == 0 and not by_partition[0]:
                # Partition 0 waits for partition 1: only concurrent workers let this finish.
                await asyncio.wait_for(other_partition_done.wait(), timeout=20)
            by_partition[ctx.partition].append(msg.request_id)
            if ctx.partition == 1:
                other_partition_done.set()

        for p, n in [(p, n) for p in (0, 1) for n in range(3)]:
            await send_to_partition(kafka_bootstrap_servers, world.topic, p, request(10 * p + n))
        async with world.running(world.loop(handle)):
            await eventually(
                lambda: len(by_partition[0]) == 3 and len(by_partition[1]) == 3, what="all handled"
            )
            await world.committed_reaches({0: 3, 1: 3}, partitions=2)
        assert by_partition == {0: ["req-0", "req-1", "req-2"], 1: ["req-10", "req-11", "req-12"]}

    async def test_one_account_waiting_out_its_rate_limit_does_not_hold_up_another_on_its_partition(
        self, world: LoopWorld
    ) -> None:
        # One partition (as two accounts share one in production): acct-a's upload comes first and
        # waits out its rate-limit window; acct-b's, behind it on the same partition, goes ahead.
        b_done = asyncio.Event()
        a_attempts: list[bool] = []  # per attempt of acct-a: had acct-b finished by then?
        order: list[str] = []

        async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
            if msg.account_id == "acct-a":
                a_attempts.append(b_done.is_set())
                if not b_done.is_set():
                    raise RateLimitedError("init quota used up", retry_after=0.2)
            order.append(msg.request_id)
            if msg.account_id == "acct-b":
                b_done.set()

        await world.publisher.publish(world.topic, request(1, account="acct-a"), key="acct-a")
        await world.publisher.publish(world.topic, request(2, account="acct-b"), key="acct-b")
        async with world.running(world.loop(handle)):
            await eventually(lambda: order == ["req-2", "req-1"], what="acct-b first, then acct-a")
            await world.committed_reaches({0: 2})
        # acct-a was still waiting (retrying) when acct-b's upload finished; its wait did not delay b.
        assert a_attempts[0] is False
        assert a_attempts[-1] is True

    async def test_a_finished_record_behind_an_unfinished_one_is_not_committed_and_is_redelivered(
        self, world: LoopWorld
    ) -> None:
        never = asyncio.Event()
        finished: list[str] = []

        async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
            if msg.account_id == "acct-a":
                await never.wait()  # stuck: the process will die with it in flight
            finished.append(msg.request_id)

        await world.publisher.publish(world.topic, request(1, account="acct-a"), key="acct-a")
        await world.publisher.publish(world.topic, request(2, account="acct-b"), key="acct-b")
        stop = asyncio.Event()
        task = asyncio.create_task(world.loop(handle).run(stop))
        await eventually(lambda: finished == ["req-2"], what="acct-b handled past the stuck acct-a")
        task.cancel()  # the process dies
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await world.committed() == {0: -1}  # never past the unfinished offset 0

        never.set()
        async with world.running(world.loop(handle)):
            await world.committed_reaches({0: 2})
        assert sorted(finished) == ["req-1", "req-2", "req-2"]  # both redelivered

    async def test_records_of_one_key_run_one_at_a_time_in_order(self, world: LoopWorld) -> None:
        running: set[str] = set()
        overlaps: list[str] = []
        order: list[str] = []

        async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
            if msg.account_id in running:
                overlaps.append(msg.request_id)
            running.add(msg.account_id)
            await asyncio.sleep(0.05)
            running.discard(msg.account_id)
            order.append(msg.request_id)

        for n in range(6):
            account = "acct-a" if n % 2 == 0 else "acct-b"
            await world.publisher.publish(world.topic, request(n, account=account), key=account)
        async with world.running(world.loop(handle)):
            await world.committed_reaches({0: 6})
        assert overlaps == []
        assert [r for r in order if r in ("req-0", "req-2", "req-4")] == ["req-0", "req-2", "req-4"]
        assert [r for r in order if r in ("req-1", "req-3", "req-5")] == ["req-1", "req-3", "req-5"]

    async def test_a_handler_longer_than_max_poll_interval_causes_no_rebalance(
        self, world: LoopWorld
    ) -> None:
        async def long_upload(msg: UploadRequested, ctx: RecordContext) -> None:
            world.seen.started.append((msg.request_id, ctx.partition, ctx.offset))
            if msg.request_id == "req-1":
                await asyncio.sleep(6)  # twice max_poll_interval_ms
            world.seen.finished.append((msg.request_id, ctx.partition, ctx.offset))

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        await world.publisher.publish(world.topic, request(2), key="acct-1")
        async with world.running(
            world.loop(long_upload, max_poll_interval_ms=3000, rebalance_timeout_ms=6000)
        ):
            await eventually(lambda: len(world.seen.finished) == 2, timeout=40, what="both handled")
            await world.committed_reaches({0: 2})
        # A rebalance would have cancelled and redelivered req-1.
        assert world.seen.ids("started") == ["req-1", "req-2"]

    async def test_revoked_partitions_cancel_in_flight_work_which_the_new_owner_redoes(
        self, world: LoopWorld
    ) -> None:
        gate = asyncio.Event()
        cancelled: list[str] = []

        async def gated(msg: UploadRequested, ctx: RecordContext) -> None:
            world.seen.started.append((msg.request_id, ctx.partition, ctx.offset))
            try:
                await gate.wait()
            except asyncio.CancelledError:
                cancelled.append(msg.request_id)
                raise
            world.seen.finished.append((msg.request_id, ctx.partition, ctx.offset))

        await world.publisher.publish(world.topic, request(1), key="acct-1")
        async with world.running(world.loop(gated)):
            await eventually(lambda: len(world.seen.started) == 1, what="first consumer started the record")
            # A second member joins: the partition is revoked from the first during the rebalance.
            async with world.running(world.loop(gated)):
                await eventually(lambda: cancelled == ["req-1"], what="in-flight work cancelled on revoke")
                assert await world.committed() == {0: -1}
                await eventually(
                    lambda: len(world.seen.started) == 2, what="the owner after the rebalance restarts it"
                )
                gate.set()
                await eventually(lambda: world.seen.ids() == ["req-1"], what="redone once")
                await world.committed_reaches({0: 1})

    async def test_a_revoke_cancels_in_flight_work_and_commits_only_up_to_it(self, world: LoopWorld) -> None:
        gate = asyncio.Event()
        cancelled: list[str] = []
        finished: list[str] = []

        async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
            if msg.account_id == "acct-b" and not gate.is_set():
                try:
                    await gate.wait()
                except asyncio.CancelledError:
                    cancelled.append(msg.request_id)
                    raise
            finished.append(msg.request_id)

        # offset 0 (acct-a) finishes, 1 (acct-b) is in flight, 2 (acct-c) finishes behind it.
        for n, account in enumerate(["acct-a", "acct-b", "acct-c"]):
            await world.publisher.publish(world.topic, request(n, account=account), key=account)
        async with world.running(world.loop(handle)):
            await eventually(lambda: sorted(finished) == ["req-0", "req-2"], what="0 and 2 handled")
            await world.committed_reaches({0: 1})
            async with world.running(world.loop(handle)):  # a second member: a rebalance
                await eventually(lambda: cancelled == ["req-1"], what="in-flight work cancelled on revoke")
                assert await world.committed() == {0: 1}  # never past the unfinished offset 1
                gate.set()
                await world.committed_reaches({0: 3})
        assert finished.count("req-1") == 1


async def send_to_partition(bootstrap: str, topic: str, partition: int, message: UploadRequested) -> None:
    """Produce `message` to one partition explicitly (the publisher picks partitions by key)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, message.model_dump_json().encode(), partition=partition)
    finally:
        await producer.stop()


NOWHERE = "127.0.0.1:1"  # nothing listens on port 1


class TestWithoutABroker:
    async def test_ensure_topics_says_retry_later(self) -> None:
        with pytest.raises(RetryableError, match="could not ensure Kafka topics"):
            await ensure_topics(NOWHERE, ["t"], partitions=1, replication_factor=1)

    async def test_the_publisher_says_retry_later(self) -> None:
        with pytest.raises(RetryableError, match="could not connect the Kafka producer"):
            await KafkaPublisher(NOWHERE, client_id="t").start()

    async def test_publishing_before_start_is_a_programming_error(self) -> None:
        with pytest.raises(RuntimeError, match="not started"):
            await KafkaPublisher(NOWHERE, client_id="t").publish_raw("t", b"x", key=None)

    async def test_the_consumer_loop_says_retry_later_and_is_not_healthy(self) -> None:
        async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
            raise AssertionError("never called")

        loop = ConsumerLoop(
            bootstrap_servers=NOWHERE,
            group_id="g",
            topic="t",
            decode=UploadRequested.model_validate_json,
            handle=handle,
            publisher=KafkaPublisher(NOWHERE, client_id="t"),
        )
        with pytest.raises(RetryableError, match="could not connect the Kafka consumer"):
            await loop.run(asyncio.Event())
        assert not loop.is_healthy()

    def test_a_loop_needs_at_least_one_attempt(self) -> None:
        async def handle(msg: UploadRequested, ctx: RecordContext) -> None:
            return None

        with pytest.raises(ValueError, match="max_unexpected_failures"):
            ConsumerLoop(
                bootstrap_servers=NOWHERE,
                group_id="g",
                topic="t",
                decode=UploadRequested.model_validate_json,
                handle=handle,
                publisher=KafkaPublisher(NOWHERE, client_id="t"),
                max_unexpected_failures=0,
            )
