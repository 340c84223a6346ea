"""Kafka topics: create Reelay's topics with their partitions and wait until each has a leader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from reelay_common.domain.errors import (
    RetryableError,
)
from reelay_common.domain.messages import dlq_topic
from reelay_common.logging import get_logger

log = get_logger("reelay_common.adapters.kafka.topics")


_TOPIC_WAIT_SECONDS = 30.0


async def ensure_topics(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    partitions: int,
    replication_factor: int,
    with_dlq: bool = True,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create `topics` (and each `<topic>.dlq`) if missing, with the topic-level `configs`, then
    wait until they have leaders. Existing topics are left as they are."""
    names = list(dict.fromkeys([*topics, *([dlq_topic(t) for t in topics] if with_dlq else [])]))
    if not names:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="reelay-admin")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        n,
                        num_partitions=partitions,
                        replication_factor=replication_factor,
                        topic_configs=dict(configs or {}),
                    )
                    for n in missing
                ]
            )
            for topic_error in response.topic_errors:
                name, code = topic_error[0], topic_error[1]
                # Another replica may have created it between list and create: that is success.
                if code not in (0, TopicAlreadyExistsError.errno):
                    message = topic_error[2] if len(topic_error) > 2 else None
                    raise for_code(code)(f"cannot create topic {name}: {message}")
            log.info("kafka_topics_created", topics=missing, partitions=partitions)
        await _wait_for_leaders(admin, names)
    except KafkaError as exc:
        raise RetryableError(f"could not ensure Kafka topics: {exc!r}") from exc
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    # A topic is only usable once each partition has a leader; producing earlier fails.
    deadline = time.monotonic() + _TOPIC_WAIT_SECONDS
    while True:
        described = await admin.describe_topics(names)
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(names):
            return
        if time.monotonic() > deadline:
            raise RetryableError(f"Kafka topics have no leader yet: {sorted(set(names) - ready)}")
        await asyncio.sleep(0.2)
