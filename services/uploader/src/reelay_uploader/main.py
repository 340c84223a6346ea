"""The uploader's composition root: settings -> infrastructure -> handler deps -> the consumer of
`reelay.upload.requested` and the ops server, supervised until SIGTERM. Nothing is built at import."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from reelay_common.adapters.guarded_http import guarded_transport
from reelay_common.adapters.kafka.consumer import ConsumerLoop, RecordContext
from reelay_common.adapters.mongo.creator_info import MongoCreatorInfoCache
from reelay_common.adapters.url_reader import UrlVideoReader
from reelay_common.domain.messages import BlobSource, DeadLetter, UploadRequested, UrlSource
from reelay_common.logging import get_logger
from reelay_common.ports import BlobStore, SizedVideo, VideoReader
from reelay_common.readiness import instant_check
from reelay_common.runtime import Infrastructure, instrument_http_client, ops_server, run_service, supervise

from reelay_uploader.handlers import ReaderFactory, UploaderDeps, handle_dead_letter, handle_upload_requested
from reelay_uploader.settings import UploaderSettings

log = get_logger("reelay_uploader")

APP_NAME = "reelay-uploader"


def reader_factory(http: httpx.AsyncClient, blobs: BlobStore, settings: UploaderSettings) -> ReaderFactory:
    """Opens the right VideoReader for a source: the blob store for files streamed in, HTTP for URLs."""

    @asynccontextmanager
    async def open_reader(source: UrlSource | BlobSource) -> AsyncIterator[VideoReader]:
        if isinstance(source, BlobSource):
            stored = await blobs.open(source)
            try:
                yield stored
            finally:
                if isinstance(stored, SizedVideo):  # the S3 reader keeps its GET open across chunks
                    await stored.aclose()
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


async def run(
    settings: UploaderSettings,
    stop: asyncio.Event,
    *,
    on_ops_bound: Callable[[int], None] | None = None,
) -> None:
    """Run the uploader until `stop` is set; in-flight uploads get UPLOADER_SHUTDOWN_GRACE_SECONDS,
    then are handed back uncommitted."""
    async with (
        Infrastructure.connect(
            settings,
            app_name=APP_NAME,
            topics=[settings.topic_upload_requested],
            topics_without_dlq=[settings.topic_publish_events, settings.topic_publish_status],
        ) as infra,
        # Video sources may be slow and far, unlike TikTok's API: a client of their own.
        httpx.AsyncClient(
            # Connects only to the addresses the SSRF guard checked (no DNS rebinding), every hop.
            transport=guarded_transport(allow_private=settings.allow_private_urls),
            timeout=httpx.Timeout(settings.download_timeout_seconds, connect=10.0),
            follow_redirects=False,  # UrlVideoReader follows them itself, checking every hop
        ) as source_http,
    ):
        instrument_http_client(source_http)  # CLIENT spans when tracing is on (OTEL_*)
        blobs = infra.blobs  # REELAY_BLOB_STORE: local, s3 or gridfs
        deps = UploaderDeps(
            uploads=infra.uploads,
            accounts=infra.accounts,
            recorder=infra.recorder,
            outbox=infra.outbox,
            publisher=infra.publisher,
            tiktok=infra.tiktok_gateway(),
            open_reader=reader_factory(source_http, blobs, settings),
            discard_blob=lambda source: blobs.delete(source.blob_id),
            events_topic=settings.topic_publish_events,
            chunk_size=settings.chunk_size,
            max_video_bytes=settings.max_video_bytes,
            max_init_attempts=settings.max_init_attempts,
            upload_url_margin=timedelta(seconds=settings.upload_url_margin_seconds),
            retry_deadline=timedelta(seconds=settings.retry_deadline_seconds),
            creator_infos=MongoCreatorInfoCache(
                infra.db, max_age_seconds=settings.creator_info_cache_seconds
            ),
        )

        # The consumer loop binds topic/partition/offset and the message's ids to every log line.
        async def on_upload_requested(cmd: UploadRequested, _ctx: RecordContext) -> None:
            await handle_upload_requested(cmd, deps)

        async def on_dead_letter(letter: DeadLetter) -> None:
            await handle_dead_letter(letter, deps)

        consumer = ConsumerLoop[UploadRequested](
            topic=settings.topic_upload_requested,
            decode=UploadRequested.model_validate_json,
            handle=on_upload_requested,
            on_dead_letter=on_dead_letter,
            max_in_flight_per_partition=settings.max_in_flight_per_partition,
            **infra.consumer_options(settings, app_name=APP_NAME),
        )

        async def kafka_ready() -> bool:
            return consumer.is_healthy() and await infra.publisher.healthy()

        log.info(
            "uploader_starting",
            topic=settings.topic_upload_requested,
            group=settings.consumer_group,
            tiktok=settings.tiktok_api_base_url,
            blob_store=blobs.kind,
        )
        await supervise(
            {
                "consumer": consumer.run,
                "outbox": infra.outbox.run,
                "ops": ops_server(
                    host=settings.ops_host,
                    port=settings.ops_port,
                    checks={
                        "mongo": infra.mongo_ready,
                        "kafka": kafka_ready,
                        "assigned": instant_check(consumer.has_assignment),
                    },
                    on_bound=on_ops_bound,
                ),
            },
            stop,
        )
    log.info("uploader_stopped")


def main() -> None:
    """Console entry point (`reelay-uploader`)."""
    run_service(APP_NAME, UploaderSettings, run)
