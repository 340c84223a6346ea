"""What the ingest routes reach through `request.app.state.context`: settings, ports, metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reelay_common.readiness import Check

from reelay_ingest.deps import IngestDeps
from reelay_ingest.keyring import KeyRing
from reelay_ingest.observe import IngestMetrics
from reelay_ingest.settings import IngestSettings


@dataclass(frozen=True)
class AppContext:
    """One ingest app's settings, handler deps, readiness checks and metrics."""

    settings: IngestSettings
    deps: IngestDeps
    # name -> check; /readyz answers 200 only while every one returns True.
    ready_checks: Mapping[str, Check]
    # Which tenant an API key belongs to (INGEST_API_KEYS: the default one).
    keys: KeyRing = field(default_factory=lambda: KeyRing((), None), repr=False)
    metrics: IngestMetrics = field(default_factory=IngestMetrics)

    @classmethod
    def of(cls, settings: IngestSettings, deps: IngestDeps, ready_checks: Mapping[str, Check]) -> AppContext:
        """The context of an app serving `deps` as `settings` say."""
        return cls(
            settings=settings,
            deps=deps,
            ready_checks=ready_checks,
            keys=KeyRing(
                [k.get_secret_value() for k in settings.api_keys],
                deps.tenants,
                cache_seconds=settings.api_key_cache_seconds,
            ),
        )
