"""Fault injection: what the operator asked for, and the dice that decide each call."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Endpoint = Literal[
    "creator_info",
    "video_init",
    "inbox_init",
    "status_fetch",
    "cancel",
    "oauth_token",
    "oauth_revoke",
    "upload",
]

# §6: every documented fail_reason a publish can end with.
FAIL_REASONS = frozenset(
    {
        "internal",
        "video_pull_failed",
        "photo_pull_failed",
        "spam_risk_too_many_posts",
        "file_format_check_failed",
        "duration_check_failed",
        "frame_rate_check_failed",
        "picture_size_check_failed",
        "spam_risk_text",
        "spam_risk",
        "spam_risk_user_banned_from_posting",
        "auth_removed",
        "publish_cancelled",
    }
)

PutFault = Literal["none", "error", "drop_before_store", "drop_after_store"]


class FaultConfig(BaseModel):
    """The standing fault configuration (`PUT /sandbox/faults`, env SANDBOX_FAULTS as JSON)."""

    model_config = ConfigDict(extra="forbid")

    # Same seed + same call sequence = same faults, so tests are reproducible.
    seed: int | None = None
    put_error_rate: float = Field(0.0, ge=0.0, le=1.0)
    put_error_status: int = Field(503, ge=500, le=599)
    put_drop_before_store_rate: float = Field(0.0, ge=0.0, le=1.0)
    put_drop_after_store_rate: float = Field(0.0, ge=0.0, le=1.0)
    # 1-based numbers of chunk PUTs (counted since the faults were last set) that get the fault.
    put_error_on: list[int] = Field(default_factory=list)
    put_drop_before_store_on: list[int] = Field(default_factory=list)
    put_drop_after_store_on: list[int] = Field(default_factory=list)
    # The next N calls of an endpoint answer 429 rate_limit_exceeded / 500 internal_error.
    rate_limit_burst: dict[Endpoint, int] = Field(default_factory=dict)
    error_burst: dict[Endpoint, int] = Field(default_factory=dict)
    # Each call of the endpoint waits this long before it is handled.
    delay_seconds: dict[Endpoint, float] = Field(default_factory=dict)
    # The next publishes to finish processing end FAILED with these reasons, in order.
    fail_next_publish: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> FaultConfig:
        total = self.put_error_rate + self.put_drop_before_store_rate + self.put_drop_after_store_rate
        if total > 1.0:
            raise ValueError("the PUT fault rates add up to more than 1")
        unknown = [r for r in self.fail_next_publish if r not in FAIL_REASONS]
        if unknown:
            raise ValueError(f"unknown fail_reason(s): {unknown}")
        if any(
            n < 1 for n in [*self.put_error_on, *self.put_drop_before_store_on, *self.put_drop_after_store_on]
        ):
            raise ValueError("PUT numbers are 1-based")
        if any(v < 0 for v in [*self.rate_limit_burst.values(), *self.error_burst.values()]):
            raise ValueError("burst counts must be >= 0")
        if any(v < 0 for v in self.delay_seconds.values()):
            raise ValueError("delays must be >= 0")
        return self


class FaultRequest(FaultConfig):
    """Body of `PUT /sandbox/faults`: the new configuration plus one-off actions."""

    # Revoke every token of these users now (fires authorization.removed).
    revoke_tokens: list[str] = Field(default_factory=list)
    revoke_reason: int = Field(1, ge=0, le=5)

    def config(self) -> FaultConfig:
        """The standing part, without the one-off actions."""
        return FaultConfig.model_validate(self.model_dump(exclude={"revoke_tokens", "revoke_reason"}))


class FaultInjector:
    """Holds the active faults and rolls the dice for each call."""

    def __init__(self, config: FaultConfig) -> None:
        self.set(config)

    def set(self, config: FaultConfig) -> None:
        """Replace the configuration; restarts the PUT count and the random sequence."""
        self.config = config.model_copy(deep=True)
        self._rng = random.Random(config.seed)
        self.put_count = 0
        self.injected: dict[str, int] = {}

    def _note(self, what: str) -> None:
        self.injected[what] = self.injected.get(what, 0) + 1

    def next_put(self) -> PutFault:
        """Decide the fate of the next chunk PUT."""
        self.put_count += 1
        n, c = self.put_count, self.config
        fault: PutFault = "none"
        if n in c.put_error_on:
            fault = "error"
        elif n in c.put_drop_before_store_on:
            fault = "drop_before_store"
        elif n in c.put_drop_after_store_on:
            fault = "drop_after_store"
        elif c.put_error_rate or c.put_drop_before_store_rate or c.put_drop_after_store_rate:
            roll = self._rng.random()
            if roll < c.put_error_rate:
                fault = "error"
            elif roll < c.put_error_rate + c.put_drop_before_store_rate:
                fault = "drop_before_store"
            elif roll < c.put_error_rate + c.put_drop_before_store_rate + c.put_drop_after_store_rate:
                fault = "drop_after_store"
        if fault != "none":
            self._note(f"put_{fault}")
        return fault

    def take_rate_limit(self, endpoint: Endpoint) -> bool:
        """True when this call is one of a pending 429 burst."""
        return self._take(self.config.rate_limit_burst, endpoint, "rate_limit_burst")

    def take_error(self, endpoint: Endpoint) -> bool:
        """True when this call is one of a pending 500 burst."""
        return self._take(self.config.error_burst, endpoint, "error_burst")

    def _take(self, bursts: dict[Endpoint, int], endpoint: Endpoint, what: str) -> bool:
        left = bursts.get(endpoint, 0)
        if left <= 0:
            return False
        bursts[endpoint] = left - 1
        self._note(f"{what}:{endpoint}")
        return True

    def delay(self, endpoint: Endpoint) -> float:
        """Seconds to stall this call."""
        return self.config.delay_seconds.get(endpoint, 0.0)

    def take_forced_failure(self) -> str | None:
        """The reason the next finishing publish must fail with, if one is queued."""
        if not self.config.fail_next_publish:
            return None
        self._note("fail_next_publish")
        return self.config.fail_next_publish.pop(0)
