"""What a running ingest app holds: settings, policy, metrics, and the ports once started."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from reelay_ingest.deps import IngestDeps, Policy
from reelay_ingest.observe import IngestMetrics
from reelay_ingest.settings import IngestSettings


@dataclass
class Runtime:
    """Per-app state, reachable from routes as `request.app.state.runtime`."""

    settings: IngestSettings
    policy: Policy
    metrics: IngestMetrics
    deps: IngestDeps | None = None
    _api_keys: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def for_settings(cls, settings: IngestSettings) -> Runtime:
        """A runtime for `settings`, not yet started."""
        return cls(
            settings=settings,
            policy=Policy.from_settings(settings),
            metrics=IngestMetrics(),
            _api_keys=tuple(k.get_secret_value().encode() for k in settings.api_keys),
        )

    def ports(self) -> IngestDeps:
        """The ports; only while the app's lifespan runs."""
        if self.deps is None:
            raise RuntimeError("the ingest app is not started (its lifespan has not run)")
        return self.deps

    def api_key_valid(self, presented: str) -> bool:
        """Whether `presented` is one of the configured keys, compared in constant time."""
        given = presented.encode()
        # Compare against every key, without stopping at a match, so timing says nothing.
        matches = [hmac.compare_digest(given, key) for key in self._api_keys]
        return any(matches)
