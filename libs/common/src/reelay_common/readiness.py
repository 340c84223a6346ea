"""Readiness: every service's dependency checks, run concurrently, each bounded by one timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from reelay_common.logging import get_logger

log = get_logger("reelay_common.readiness")

Check = Callable[[], Awaitable[bool]]

# Below the 3 s timeout of the readiness probes (deploy/k8s, docker-compose), so a hung
# dependency is reported as a failed check, never as a probe that timed out.
CHECK_TIMEOUT_SECONDS = 2.5


def instant_check(predicate: Callable[[], bool]) -> Check:
    """A check of a predicate that answers at once (a loop's own health or assignment flag)."""

    async def check() -> bool:
        return predicate()

    return check


@dataclass(frozen=True)
class Readiness:
    """The outcome of each named check; ready only when every one passed."""

    checks: dict[str, bool]

    @property
    def ready(self) -> bool:
        """Whether every check passed (no checks: ready)."""
        return all(self.checks.values())


async def check_readiness(checks: Mapping[str, Check]) -> Readiness:
    """Run `checks` concurrently; a check that fails, raises or outlasts the timeout is False."""
    names = list(checks)
    results = await asyncio.gather(*(_run(name, checks[name]) for name in names))
    return Readiness(dict(zip(names, results, strict=True)))


async def _run(name: str, check: Check) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return bool(await check())
    # A probe must answer whatever the dependency does: any error of a check means "not ready",
    # and is logged with its type so a bug in a check stays visible.
    except Exception as exc:
        log.info("ready_check_failed", check=name, error=type(exc).__name__)
        return False
