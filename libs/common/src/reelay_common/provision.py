"""`reelay-create-topics`: create Reelay's Kafka topics with their partitions and configs (the
Kubernetes Job of deploy/k8s, or by hand), reading only the Kafka and topic settings."""

from __future__ import annotations

import asyncio
import sys
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from reelay_common.adapters.kafka.topics import ensure_topics
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.messages import TOPIC_PUBLISH_EVENTS, TOPIC_PUBLISH_STATUS, TOPIC_UPLOAD_REQUESTED
from reelay_common.logging import configure_logging, get_logger

log = get_logger("reelay_common.provision")


class TopicSettings(BaseSettings):
    """The subset of `CommonSettings` that topic creation needs, under the same env names and
    defaults (a unit test holds them equal), so that no secret has to reach the Job."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias="REELAY_LOG_LEVEL"
    )
    log_format: Literal["auto", "json", "console"] = Field("auto", validation_alias="REELAY_LOG_FORMAT")
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    topic_partitions: int = Field(6, ge=1, validation_alias="REELAY_TOPIC_PARTITIONS")
    topic_replication_factor: int = Field(1, ge=1, validation_alias="REELAY_TOPIC_REPLICATION_FACTOR")
    topic_upload_requested: str = Field(
        TOPIC_UPLOAD_REQUESTED, validation_alias="REELAY_TOPIC_UPLOAD_REQUESTED"
    )
    topic_publish_events: str = Field(TOPIC_PUBLISH_EVENTS, validation_alias="REELAY_TOPIC_PUBLISH_EVENTS")
    topic_publish_status: str = Field(TOPIC_PUBLISH_STATUS, validation_alias="REELAY_TOPIC_PUBLISH_STATUS")


def topic_configs(replication_factor: int) -> dict[str, str]:
    """Topic-level configs: with 3 replicas or more, acks=all needs 2 in sync (one broker may go)."""
    return {"min.insync.replicas": str(min(2, replication_factor))} if replication_factor >= 3 else {}


async def create_topics(settings: TopicSettings) -> None:
    """Create the consumed topics (each with its `.dlq`) and the outbound status topic."""
    configs = topic_configs(settings.topic_replication_factor)
    consumed = [settings.topic_upload_requested, settings.topic_publish_events]
    for topics, with_dlq in ((consumed, True), ([settings.topic_publish_status], False)):
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            topics,
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            with_dlq=with_dlq,
            configs=configs,
        )
    log.info(
        "topics_ensured",
        topics=[*consumed, settings.topic_publish_status],
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
        configs=configs,
    )


def main() -> None:
    """Console entry point (`reelay-create-topics`): exit 0 once the topics exist, 1 if Kafka
    cannot be reached (the Job retries)."""
    settings = TopicSettings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(create_topics(settings))
    except RetryableError as exc:
        log.error("topics_not_created", error=str(exc))
        sys.exit(1)
