"""Fakes of the Mongo-backed stores (ports.UploadStore, AccountStore, CreatorInfoCache,
PollProfiles), kept in dicts.

Written from the ports' contract, not from the adapters: the contract suites in
tests/integration/platform run the same assertions on these and on the real stores.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from reelay_common.domain.messages import StateSource, UploadRequested
from reelay_common.domain.profiles import ProcessingProfile
from reelay_common.domain.records import (
    AccountRecord,
    AccountStatus,
    CallbackDelivery,
    Change,
    OutboxEntry,
    UploadRecord,
    check_settable,
)
from reelay_common.domain.states import TERMINAL_STATES, UploadState, can_transition
from reelay_common.domain.tenancy import scoped, split_scoped
from reelay_common.domain.tiktok import CreatorInfo, TokenGrant

from reelay_testing.roundtrip import as_stored, stored_now, to_millis

# `published` stays claimable while the poller watches it for post ids (until it clears
# poll_next_at); every other terminal state ends polling for good.
_NEVER_POLLED = frozenset(TERMINAL_STATES - {UploadState.PUBLISHED})

_FAKE_CIPHERTEXT = "fake-ciphertext"  # stands in for ciphertext, not a secret


class FakeUploadStore:
    """ports.UploadStore in a dict: guarded, forward-only, each call atomic (no await inside)."""

    def __init__(self) -> None:
        self.records: dict[str, UploadRecord] = {}
        # What archive_settled counted out of the work in flight (one dict here: nothing moves, and
        # every read agrees, as the port promises).
        self.archived: set[str] = set()

    def _put(self, record: UploadRecord, changes: Mapping[str, Any]) -> UploadRecord:
        """Store `record` with `changes` applied as a document would keep them; a copy of the result."""
        merged = {**record.model_dump(by_alias=True), **as_stored(dict(changes))}
        stored = UploadRecord.model_validate(merged)
        self.records[stored.request_id] = stored
        return stored.model_copy(deep=True)

    async def create(
        self, cmd: UploadRequested, *, source: StateSource, enqueue: bool = False, lease_seconds: float = 0.0
    ) -> tuple[UploadRecord, bool]:
        """Keep a new `accepted` upload unless the request_id is known; (record, created)."""
        existing = self.records.get(scoped(cmd.tenant_id, cmd.request_id))
        if existing is not None:
            return existing.model_copy(deep=True), False
        now = stored_now()
        new = UploadRecord.new(cmd, source=source, now=now, enqueue=enqueue)
        lease = {"outbox_lease_until": now + timedelta(seconds=lease_seconds)} if lease_seconds else {}
        # Every field as a document keeps it (requested_at, the client's, loses its microseconds).
        return self._put(new, {**new.model_dump(by_alias=True), **lease}), True

    async def get(self, request_id: str) -> UploadRecord | None:
        """The upload, or None."""
        record = self.records.get(request_id)
        return record.model_copy(deep=True) if record is not None else None

    async def find_in_flight(self, request_id: str) -> UploadRecord | None:
        """The upload unless archive_settled counted it out of the work in flight."""
        return None if request_id in self.archived else await self.get(request_id)

    def _owing(
        self,
        record: UploadRecord,
        state: UploadState,
        source: StateSource,
        now: datetime,
        *,
        due_at: datetime | None = None,
    ) -> dict[str, Any]:
        """The outbox fields after appending the announcement of `state` (due `due_at`, or now)."""
        entry = OutboxEntry.status(state, source=source, at=now)
        outbox = [*(e.model_dump() for e in record.outbox), entry.model_dump()]
        return {"outbox": outbox, "outbox_due_at": due_at or now}

    async def transition(self, request_id: str, change: Change) -> UploadRecord | None:
        """Move forward to `change.target` with its fields; None if unknown, or already there or beyond."""
        target, fields = change.target, change.fields()
        check_settable(fields)
        record = self.records.get(request_id)
        if record is None or not can_transition(record.state, target):
            return None
        now = stored_now()
        entry = as_stored(change.history_entry(now))
        history = [*as_stored([h.model_dump() for h in record.history]), entry]
        owing = self._owing(record, target, change.source, now, due_at=change.outbox_due_at(now))
        return self._put(
            record, {**fields, "state": target.value, "updated_at": now, "history": history, **owing}
        )

    async def checkpoint(
        self, request_id: str, fields: Mapping[str, Any], *, expect_state: UploadState | None = None
    ) -> UploadRecord | None:
        """Set `fields` without a state change (only while in `expect_state`, when given)."""
        check_settable(fields)
        record = self.records.get(request_id)
        if record is None or (expect_state is not None and record.state is not expect_state):
            return None
        return self._put(record, {**fields, "updated_at": stored_now()})

    async def list(
        self,
        *,
        tenant_id: str | None = None,
        account_id: str | None = None,
        state: UploadState | None = None,
        limit: int = 100,
    ) -> builtins.list[UploadRecord]:
        """Uploads, newest first (ties by request_id), optionally of one tenant, for one account
        (its stored key) and/or in one state."""
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        found = [
            r
            for r in self.records.values()
            if (tenant_id is None or r.tenant_id == tenant_id)
            and (account_id is None or r.account_id == account_id)
            and (state is None or r.state is state)
        ]
        found.sort(key=lambda r: r.request_id)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return [r.model_copy(deep=True) for r in found[:limit]]

    async def find_by_publish_id(self, publish_id: str) -> UploadRecord | None:
        """The upload TikTok knows as `publish_id`, or None."""
        for record in self.records.values():
            if record.publish_id == publish_id:
                return record.model_copy(deep=True)
        return None

    async def claim_due_poll(self, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease the earliest due, tracked upload whose lease is free or expired."""
        at = to_millis(now)
        due = [
            r
            for r in self.records.values()
            if r.poll_next_at is not None
            and r.poll_next_at <= at
            and r.state not in _NEVER_POLLED
            and (r.poll_lease_until is None or r.poll_lease_until < at)
        ]
        if not due:
            return None
        record = min(due, key=lambda r: r.poll_next_at or at)
        return self._put(record, {"poll_lease_until": now + timedelta(seconds=lease_seconds)})

    async def schedule_poll(
        self, request_id: str, next_at: datetime, *, attempts: int, polled_at: datetime | None = None
    ) -> None:
        """Set when to poll next and release the lease (and when TikTok was last asked, if it was)."""
        record = self.records.get(request_id)
        if record is not None:
            fields: dict[str, Any] = {
                "poll_next_at": next_at,
                "poll_attempts": attempts,
                "poll_lease_until": None,
            }
            if polled_at is not None:
                fields["poll_last_at"] = polled_at
            self._put(record, fields)

    async def archive_settled(self, now: datetime, *, grace_seconds: float, limit: int = 100) -> int:
        """Count out uploads settled (terminal, no longer watched) and quiet for `grace_seconds`."""
        cutoff = to_millis(now - timedelta(seconds=grace_seconds))
        moved = 0
        for record in self.records.values():
            settled = record.state in _NEVER_POLLED or (
                record.state is UploadState.PUBLISHED and record.poll_next_at is None
            )
            if (
                moved < limit
                and settled
                and record.outbox_due_at is None
                and record.updated_at < cutoff
                and record.request_id not in self.archived
            ):
                self.archived.add(record.request_id)
                moved += 1
        return moved

    async def add_post_ids(
        self, request_id: str, post_ids: Sequence[str], *, source: StateSource
    ) -> UploadRecord | None:
        """Merge `post_ids` in and append their announcement; None when none was new."""
        record = self.records.get(request_id)
        new = [p for p in dict.fromkeys(post_ids) if record is not None and p not in record.post_ids]
        if record is None or not new:
            return None
        self.archived.discard(request_id)  # a late fact brings it back in flight
        now = stored_now()
        owing = self._owing(record, record.state, source, now)
        return self._put(record, {"post_ids": [*record.post_ids, *new], "updated_at": now, **owing})

    async def count_owing(self) -> int:
        """How many uploads still owe Kafka a message."""
        return sum(1 for r in self.records.values() if r.outbox_due_at is not None)

    def _lease_free(self, record: UploadRecord, at: datetime) -> bool:
        return record.outbox_lease_until is None or record.outbox_lease_until < at

    async def claim_due_outbox(self, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease the earliest due outbox whose lease is free or expired."""
        at = to_millis(now)
        due = [
            r
            for r in self.records.values()
            if r.outbox_due_at is not None and r.outbox_due_at <= at and self._lease_free(r, at)
        ]
        if not due:
            return None
        record = min(due, key=lambda r: r.outbox_due_at or at)
        return self._put(record, {"outbox_lease_until": now + timedelta(seconds=lease_seconds)})

    async def lease_outbox(self, request_id: str, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease this upload's outbox if entries wait and no other holds it."""
        record = self.records.get(request_id)
        if record is None or record.outbox_due_at is None or not self._lease_free(record, to_millis(now)):
            return None
        return self._put(record, {"outbox_lease_until": now + timedelta(seconds=lease_seconds)})

    async def settle_outbox(
        self, request_id: str, sent: Sequence[OutboxEntry], *, next_try_at: datetime
    ) -> UploadRecord | None:
        """Drop the entries `sent` (by id), release the lease; the rest is due at `next_try_at`."""
        record = self.records.get(request_id)
        if record is None:
            return None
        sent_ids = {e.id for e in sent}
        left = [e.model_dump() for e in record.outbox if e.id not in sent_ids]
        due = next_try_at if left else None
        return self._put(record, {"outbox": left, "outbox_due_at": due, "outbox_lease_until": None})

    async def record_callback(self, request_id: str, delivery: CallbackDelivery) -> UploadRecord | None:
        """Set the callback of `delivery.state` unless it is finished; None if unknown or finished."""
        record = self.records.get(request_id)
        if record is None:
            return None
        current = record.callbacks.get(delivery.state)
        if current is not None and current.finished:
            return None
        callbacks = {
            **{s: c.model_dump() for s, c in record.callbacks.items()},
            delivery.state: delivery.model_dump(),
        }
        return self._put(record, {"callbacks": callbacks})


class FakeAccountStore:
    """ports.AccountStore in a dict; the clear tokens live in `tokens`, never in the records."""

    def __init__(self) -> None:
        self.records: dict[str, AccountRecord] = {}
        self.tokens: dict[str, tuple[str, str]] = {}

    async def upsert_tokens(self, account_id: str, grant: TokenGrant) -> AccountRecord:
        """Keep a fresh grant (the account is created if new) and bump token_version."""
        now = stored_now()
        previous = self.records.get(account_id)
        fresh = {
            "open_id": grant.open_id,
            "scopes": grant.scopes,
            "access_token_enc": _FAKE_CIPHERTEXT,
            "access_expires_at": now + timedelta(seconds=grant.expires_in),
            "refresh_token_enc": _FAKE_CIPHERTEXT,
            "refresh_expires_at": now + timedelta(seconds=grant.refresh_expires_in),
            "status": AccountStatus.CONNECTED,
            "updated_at": now,
        }
        if previous is None:
            record = AccountRecord.model_validate(
                {
                    "_id": account_id,
                    "tenant_id": split_scoped(account_id)[0],
                    **fresh,
                    "token_version": 1,
                    "created_at": now,
                }
            )
        else:
            record = previous.model_copy(update={**fresh, "token_version": previous.token_version + 1})
        self.records[account_id] = record
        self.tokens[account_id] = (grant.access_token, grant.refresh_token)
        return record.model_copy(deep=True)

    async def get(self, account_id: str) -> AccountRecord | None:
        """The account, or None."""
        record = self.records.get(account_id)
        return record.model_copy(deep=True) if record is not None else None

    def add_connected(
        self, account_id: str, *, open_id: str | None = None, scopes: Iterable[str] = ()
    ) -> None:
        """Test shortcut: a connected account with long-lived fake tokens."""
        now = stored_now()
        self.records[account_id] = AccountRecord.model_validate(
            {
                "_id": account_id,
                "tenant_id": split_scoped(account_id)[0],
                "open_id": open_id or f"open-{account_id}",
                "scopes": list(scopes) or ["user.info.basic", "video.publish", "video.upload"],
                "access_token_enc": _FAKE_CIPHERTEXT,
                "access_expires_at": now + timedelta(days=1),
                "refresh_token_enc": _FAKE_CIPHERTEXT,
                "refresh_expires_at": now + timedelta(days=365),
                "token_version": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
        self.tokens[account_id] = (f"act.{account_id}", f"rft.{account_id}")


class FakeCreatorInfoCache:
    """ports.CreatorInfoCache in a dict: an account's answer is kept `max_age_seconds` by `clock`
    (a FakeClock in tests), as MongoCreatorInfoCache keeps it for every replica."""

    def __init__(self, clock: Callable[[], datetime], *, max_age_seconds: float = 60.0) -> None:
        self._clock = clock
        self._max_age = timedelta(seconds=max_age_seconds)
        self.kept: dict[str, tuple[CreatorInfo, datetime]] = {}

    async def get_or_fetch(self, account_id: str, fetch: Callable[[], Awaitable[CreatorInfo]]) -> CreatorInfo:
        kept = self.kept.get(account_id)
        if kept is not None and self._clock() - kept[1] < self._max_age:
            return kept[0]
        info = await fetch()
        self.kept[account_id] = (info, self._clock())
        return info


class FakePollProfiles:
    """ports.PollProfiles in a dict; each observation atomic (no await inside)."""

    def __init__(self) -> None:
        self.profiles: dict[tuple[str, str], ProcessingProfile] = {}
        self.observations: list[tuple[str, str, float, float]] = []

    async def get(self, account_id: str, size_class: str) -> ProcessingProfile | None:
        """The profile kept for (account_id, size_class), or None."""
        return self.profiles.get((account_id, size_class))

    async def observe(self, account_id: str, size_class: str, low: float, high: float) -> ProcessingProfile:
        """Fold one observation into the kept profile."""
        after = self.profiles.get((account_id, size_class), ProcessingProfile()).observe(low, high)
        self.profiles[(account_id, size_class)] = after
        self.observations.append((account_id, size_class, low, high))
        return after
