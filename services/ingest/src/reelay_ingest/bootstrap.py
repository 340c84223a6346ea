"""The composition root: builds the real adapters (Mongo, Kafka, TikTok) for one ingest process."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
from reelay_common.adapters.blobs import open_blob_store
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.adapters.kafka.topics import ensure_topics
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.client import connect, ensure_indexes, ping
from reelay_common.adapters.mongo.rate_limits import MongoRateLimiter
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.gateway import TikTokGateway
from reelay_common.adapters.tiktok.tokens import MongoTokenProvider
from reelay_common.logging import get_logger
from reelay_common.recorder import StateRecorder

from reelay_ingest.deps import IngestDeps, Topics
from reelay_ingest.settings import IngestSettings

log = get_logger(__name__)

# An HTTP caller waits for creator_info: pace briefly, then answer 429 rather than hang a minute.
CREATOR_INFO_MAX_WAIT_SECONDS = 5.0


async def build_deps(settings: IngestSettings, stack: AsyncExitStack) -> IngestDeps:
    """Connect everything ingest needs; `stack` closes it all, in reverse, on shutdown."""
    topics = Topics.from_settings(settings)

    mongo = connect(settings.mongodb_uri.get_secret_value(), app_name="reelay-ingest")
    stack.push_async_callback(mongo.close)
    db = mongo[settings.mongodb_database]
    await ensure_indexes(db)

    await ensure_topics(
        settings.kafka_bootstrap_servers,
        [topics.upload_requested, topics.publish_events, topics.publish_status],
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
    )
    publisher = await stack.enter_async_context(
        KafkaPublisher(settings.kafka_bootstrap_servers, client_id="reelay-ingest")
    )

    http = await stack.enter_async_context(httpx.AsyncClient(timeout=settings.tiktok_timeout_seconds))
    client = TikTokClient.from_settings(http, settings)
    accounts = MongoAccountStore(db, TokenCipher(settings.token_encryption_key))
    gateway = TikTokGateway(
        client,
        MongoTokenProvider(accounts, client),
        MongoRateLimiter(db, max_wait_seconds=CREATOR_INFO_MAX_WAIT_SECONDS),
        max_rate_limit_retries=1,
        backoff_max=CREATOR_INFO_MAX_WAIT_SECONDS,
    )
    uploads = MongoUploadStore(db)
    blobs = await open_blob_store(settings, stack, db=db)  # REELAY_BLOB_STORE: local, s3 or gridfs

    async def mongo_ready() -> bool:
        return await ping(mongo)

    log.info(
        "ingest_connected",
        database=settings.mongodb_database,
        kafka=settings.kafka_bootstrap_servers,
        topic=topics.upload_requested,
        blob_store=blobs.kind,
    )
    return IngestDeps(
        uploads=uploads,
        accounts=accounts,
        publisher=publisher,
        recorder=StateRecorder(uploads, publisher, status_topic=topics.publish_status),
        blobs=blobs,
        tiktok=gateway,
        topics=topics,
        ready_checks={"mongo": mongo_ready, "kafka": publisher.healthy},
    )
