"""The ingest composition root: settings -> infrastructure -> handler deps -> the HTTP app, served
until SIGTERM (in-flight requests get INGEST_SHUTDOWN_GRACE_SECONDS, then everything is closed)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from reelay_common.adapters.mongo.creator_info import MongoCreatorInfoCache
from reelay_common.adapters.mongo.oauth_states import MongoOAuthStateStore
from reelay_common.adapters.mongo.tenants import MongoTenantStore
from reelay_common.adapters.ops_server import serve_app
from reelay_common.logging import get_logger
from reelay_common.runtime import Infrastructure, run_service, supervise

from reelay_ingest.app import create_app, instrument_app
from reelay_ingest.deps import IngestDeps, Policy, Topics
from reelay_ingest.lifecycle import Lifecycle, OAuthPolicy
from reelay_ingest.settings import IngestSettings

log = get_logger("reelay_ingest")

APP_NAME = "reelay-ingest"
# An HTTP caller waits for creator_info: pace briefly, then answer 429 rather than hang a minute.
CREATOR_INFO_MAX_WAIT_SECONDS = 5.0


def topics_of(settings: IngestSettings) -> Topics:
    """The topic names configured in `settings`."""
    return Topics(
        upload_requested=settings.topic_upload_requested,
        publish_events=settings.topic_publish_events,
        publish_status=settings.topic_publish_status,
    )


def policy_of(settings: IngestSettings) -> Policy:
    """The decisions `settings` make for the handlers (each Policy field is the setting of its name)."""
    return Policy(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(Policy)})


def oauth_policy_of(settings: IngestSettings) -> OAuthPolicy:
    """What `settings` decide of an OAuth connect."""
    return OAuthPolicy(
        client_key=settings.tiktok_client_key,
        authorize_base=settings.oauth_authorize_base(),
        redirect_uri=settings.oauth_redirect(),
        default_scopes=tuple(settings.oauth_scopes),
        state_ttl_seconds=settings.oauth_state_ttl_seconds,
        pkce=settings.oauth_client_type != "web",
    )


async def run(
    settings: IngestSettings,
    stop: asyncio.Event,
    *,
    on_bound: Callable[[int], None] | None = None,
) -> None:
    """Serve the ingest API until `stop` is set."""
    topics = topics_of(settings)
    async with Infrastructure.connect(
        settings,
        app_name=APP_NAME,
        topics=[topics.upload_requested, topics.publish_events, topics.publish_status],
    ) as infra:
        creator_infos = MongoCreatorInfoCache(infra.db, max_age_seconds=settings.creator_info_cache_seconds)
        tiktok = infra.tiktok_gateway(
            max_wait_seconds=CREATOR_INFO_MAX_WAIT_SECONDS,
            max_rate_limit_retries=1,
            backoff_max=CREATOR_INFO_MAX_WAIT_SECONDS,
        )
        deps = IngestDeps(
            uploads=infra.uploads,
            accounts=infra.accounts,
            publisher=infra.publisher,
            recorder=infra.recorder,
            outbox=infra.outbox,
            blobs=infra.blobs,
            tiktok=tiktok,
            topics=topics,
            policy=policy_of(settings),
            creator_infos=creator_infos,
            lifecycle=Lifecycle(
                accounts=infra.accounts,
                states=MongoOAuthStateStore(infra.db, infra.accounts.cipher),
                oauth=infra.tiktok,
                uploads=infra.uploads,
                recorder=infra.recorder,
                blobs=infra.blobs,
                policy=oauth_policy_of(settings),
                creator_infos=creator_infos,
            ),
            tenants=MongoTenantStore(infra.db),
        )
        app = instrument_app(create_app(settings, deps, ready_checks=infra.ready_checks()))

        async def serve_api(stop: asyncio.Event) -> None:
            await serve_app(
                app,
                host=settings.host,
                port=settings.port,
                stop=stop,
                on_bound=on_bound,
                name="ingest",
                # On stop, uvicorn stops accepting and lets in-flight requests (an upload streaming
                # into the blob store, a publish awaiting Kafka's ack) finish for this long.
                shutdown_grace_seconds=settings.shutdown_grace_seconds,
                proxy_headers=True,
            )

        log.info(
            "ingest_started",
            environment=settings.environment,
            host=settings.host,
            port=settings.port,
            blob_store=infra.blobs.kind,
        )
        try:
            await supervise({"api": serve_api, "outbox": infra.outbox.run}, stop)
        finally:
            log.info("ingest_stopping")
    log.info("ingest_stopped")  # Kafka flushed and closed, Mongo and the TikTok client closed


def main() -> None:
    """Console entry point (`reelay-ingest`)."""
    run_service(APP_NAME, IngestSettings, run)
