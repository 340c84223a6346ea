"""The uploader's composition root: every client is built here, handed down, and closed in reverse.

Nothing is built at import time. `run(settings, stop)` connects Mongo and Kafka, makes sure the
topics exist, wires the TikTok gateway (token provider, shared rate limiter) and the video readers,
then consumes `reelay.upload.requested` until `stop` is set, with the ops server beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.blobs import open_blob_store
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.http_source import UrlVideoReader
from reelay_common.adapters.kafka.consumer import ConsumerLoop, RecordContext
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.adapters.kafka.topics import ensure_topics
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.client import connect, ensure_indexes, ping
from reelay_common.adapters.mongo.rate_limits import MongoRateLimiter
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.adapters.ops_server import serve_ops
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.gateway import TikTokGateway
from reelay_common.adapters.tiktok.tokens import MongoTokenProvider
from reelay_common.domain.messages import BlobSource, DeadLetter, UploadRequested, UrlSource, dlq_topic
from reelay_common.domain.states import UploadState
from reelay_common.logging import get_logger
from reelay_common.ports import BlobStore, VideoReader
from reelay_common.recorder import StateRecorder
from structlog.contextvars import bound_contextvars

from reelay_uploader.handlers import SOURCE, ReaderFactory, UploaderDeps, handle_upload_requested
from reelay_uploader.settings import UploaderSettings

log = get_logger(__name__)

APP_NAME = "reelay-uploader"


def reader_factory(http: httpx.AsyncClient, blobs: BlobStore, settings: UploaderSettings) -> ReaderFactory:
    """Opens the right VideoReader for a source: the blob store for files streamed in, HTTP for URLs."""

    @asynccontextmanager
    async def open_reader(source: UrlSource | BlobSource) -> AsyncIterator[VideoReader]:
        if isinstance(source, BlobSource):
            yield await blobs.open(source)
            return
        reader = await UrlVideoReader.open(
            http,
            source.url,
            allow_private=settings.allow_private_urls,
            max_redirects=settings.max_redirects,
            max_bytes=settings.max_video_bytes,
            spool_dir=settings.spool_dir,
        )
        async with reader:
            yield reader

    return open_reader


def dead_letter_hook(
    store: MongoUploadStore, recorder: StateRecorder
) -> Callable[[DeadLetter], Awaitable[None]]:
    """Marks the upload behind a dead-lettered record `failed`, when the record names one."""

    async def on_dead_letter(letter: DeadLetter) -> None:
        if letter.request_id is None:
            return
        record = await store.get(letter.request_id)
        if record is None:
            return
        if letter.account_id is not None and letter.account_id != record.account_id:
            # A bad record borrowing someone else's request_id must not fail their upload.
            log.warning("dead_letter_request_id_conflict", request_id=letter.request_id)
            return
        if record.state not in (UploadState.ACCEPTED, UploadState.UPLOADING):
            # Already at TikTok (or settled): a poison duplicate says nothing about this upload.
            return
        detail = {
            "reason": letter.reason,
            "error": letter.error[:500],
            "dead_letter_topic": dlq_topic(letter.topic),
            "partition": letter.partition,
            "offset": letter.offset,
        }
        await recorder.record(letter.request_id, UploadState.FAILED, source=SOURCE, detail=detail)

    return on_dead_letter


async def run(
    settings: UploaderSettings,
    stop: asyncio.Event,
    *,
    on_ops_bound: Callable[[int], None] | None = None,
) -> None:
    """Run the uploader until `stop` is set; in-flight uploads get the grace period, then are handed back."""
    async with AsyncExitStack() as stack:
        mongo = connect(settings.mongodb_uri.get_secret_value(), app_name=APP_NAME)
        stack.push_async_callback(mongo.close)
        db: AsyncDatabase[dict[str, Any]] = mongo[settings.mongodb_database]
        await ensure_indexes(db)

        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [settings.topic_upload_requested],
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
        )
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [settings.topic_publish_events, settings.topic_publish_status],
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            with_dlq=False,
        )
        publisher = await stack.enter_async_context(
            KafkaPublisher(settings.kafka_bootstrap_servers, client_id=APP_NAME)
        )

        # Two HTTP clients: TikTok's API wants short timeouts; video sources may be slow and far.
        tiktok_http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=httpx.Timeout(settings.tiktok_timeout_seconds), follow_redirects=False)
        )
        source_http = await stack.enter_async_context(
            httpx.AsyncClient(
                timeout=httpx.Timeout(settings.download_timeout_seconds, connect=10.0),
                follow_redirects=False,  # UrlVideoReader follows them itself, checking every hop
            )
        )

        store = MongoUploadStore(db)
        recorder = StateRecorder(store, publisher, status_topic=settings.topic_publish_status)
        client = TikTokClient.from_settings(tiktok_http, settings)
        accounts = MongoAccountStore(db, TokenCipher(settings.token_encryption_key))
        gateway = TikTokGateway(client, MongoTokenProvider(accounts, client), MongoRateLimiter(db))
        blobs = await open_blob_store(settings, stack, db=db)  # REELAY_BLOB_STORE: local, s3 or gridfs
        deps = UploaderDeps(
            store=store,
            recorder=recorder,
            publisher=publisher,
            tiktok=gateway,
            open_reader=reader_factory(source_http, blobs, settings),
            discard_blob=lambda source: blobs.delete(source.blob_id),
            events_topic=settings.topic_publish_events,
            chunk_size=settings.chunk_size,
            max_video_bytes=settings.max_video_bytes,
            max_init_attempts=settings.max_init_attempts,
            upload_url_margin=timedelta(seconds=settings.upload_url_margin_seconds),
        )

        async def handle(cmd: UploadRequested, ctx: RecordContext) -> None:
            with bound_contextvars(topic=ctx.topic, partition=ctx.partition, offset=ctx.offset):
                await handle_upload_requested(cmd, deps)

        consumer = ConsumerLoop[UploadRequested](
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group,
            topic=settings.topic_upload_requested,
            decode=UploadRequested.model_validate_json,
            handle=handle,
            publisher=publisher,
            on_dead_letter=dead_letter_hook(store, recorder),
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            client_id=APP_NAME,
        )

        async def mongo_ready() -> bool:
            return await ping(mongo)

        async def kafka_ready() -> bool:
            return consumer.is_healthy() and await publisher.healthy()

        log.info(
            "uploader_starting",
            topic=settings.topic_upload_requested,
            group=settings.consumer_group,
            tiktok=settings.tiktok_api_base_url,
        )
        # The ops server gets its own stop event: even when this task is cancelled (a hard stop),
        # it must shut down through uvicorn, which unregisters its listening socket from the loop.
        ops_stop = asyncio.Event()
        ops = asyncio.create_task(
            serve_ops(
                host=settings.ops_host,
                port=settings.ops_port,
                checks={"mongo": mongo_ready, "kafka": kafka_ready},
                stop=ops_stop,
                on_bound=on_ops_bound,
            ),
            name="uploader-ops",
        )
        # If the ops server dies (it cannot bind, say), stop consuming so the process exits.
        ops.add_done_callback(lambda _: stop.set())
        try:
            await consumer.run(stop)
        finally:
            ops_stop.set()
            await _finish(ops)
        log.info("uploader_stopped")


async def _finish(task: asyncio.Task[None]) -> None:
    """Wait for `task` to end on its own (re-raising its error), even if the caller was cancelled."""
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=10)
    except TimeoutError:
        task.cancel()
        raise
