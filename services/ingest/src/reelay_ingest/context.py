"""What the ingest routes reach through `request.app.state.context`: settings, ports, metrics."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from reelay_common.readiness import Check

from reelay_ingest.deps import IngestDeps
from reelay_ingest.observe import IngestMetrics
from reelay_ingest.settings import IngestSettings


@dataclass(frozen=True)
class AppContext:
    """One ingest app's settings, handler deps, readiness checks and metrics."""

    settings: IngestSettings
    deps: IngestDeps
    # name -> check; /readyz answers 200 only while every one returns True.
    ready_checks: Mapping[str, Check]
    metrics: IngestMetrics = field(default_factory=IngestMetrics)
    _api_keys: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, settings: IngestSettings, deps: IngestDeps, ready_checks: Mapping[str, Check]) -> AppContext:
        """The context of an app serving `deps` as `settings` say."""
        return cls(
            settings=settings,
            deps=deps,
            ready_checks=ready_checks,
            _api_keys=tuple(k.get_secret_value().encode() for k in settings.api_keys),
        )

    def api_key_valid(self, presented: str) -> bool:
        """Whether `presented` is one of the configured keys, compared in constant time."""
        given = presented.encode()
        # Compare against every key, without stopping at a match, so timing says nothing.
        matches = [hmac.compare_digest(given, key) for key in self._api_keys]
        return any(matches)
