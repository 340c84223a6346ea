"""Fakes for the status-poller's unit tests: a scripted TikTok, and a harness that
wires the real handlers to the in-memory store and a recording publisher."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reelay_common.domain.messages import (
    PostInfo,
    PublishStatusChanged,
    UploadMode,
    UploadRequested,
    UrlSource,
)
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import PublishStatus
from reelay_status_poller.handlers import PollerDeps, PollOutcome, PollPolicy, poll_once
from reelay_testing.clocks import FakeClock
from reelay_testing.publisher import FakePublisher
from reelay_testing.stores import FakeUploadStore

from tests.recording import recording

STATUS_TOPIC = "test.publish.status"
ACCOUNT = "acct-1"


class ScriptedTikTok:
    """A TikTokApi whose status/fetch answers come from a per-publish script (the last one repeats)."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[PublishStatus | Exception]] = {}
        self.calls: dict[str, int] = defaultdict(int)

    def script(self, publish_id: str, *answers: PublishStatus | Exception) -> None:
        self.scripts[publish_id] = list(answers)

    async def fetch_status(self, account_id: str, publish_id: str) -> PublishStatus:
        self.calls[publish_id] += 1
        answers = self.scripts.get(publish_id)
        if not answers:
            raise AssertionError(f"unexpected status/fetch for {publish_id}")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def creator_info(self, account_id: str) -> Any:
        raise AssertionError("the poller never asks for creator_info")

    async def init_upload(self, account_id: str, **kwargs: Any) -> Any:
        raise AssertionError("the poller never initialises uploads")

    async def upload_chunks(self, upload: Any, **kwargs: Any) -> None:
        raise AssertionError("the poller never uploads")


class HangingTikTok(ScriptedTikTok):
    """A TikTok whose status/fetch never answers."""

    async def fetch_status(self, account_id: str, publish_id: str) -> PublishStatus:
        self.calls[publish_id] += 1
        await asyncio.sleep(3600)
        raise AssertionError("status/fetch answered after an hour")


def status(code: str, *, fail_reason: str | None = None, post_ids: Sequence[str] = ()) -> PublishStatus:
    return PublishStatus.model_validate(
        {"status": code, "fail_reason": fail_reason, "publicaly_available_post_id": list(post_ids)}
    )


@dataclass
class PollerWorld:
    uploads: FakeUploadStore
    publisher: FakePublisher
    tiktok: ScriptedTikTok
    clock: FakeClock
    policy: PollPolicy
    deps: PollerDeps = field(init=False)

    def __post_init__(self) -> None:
        rec = recording(self.uploads, self.publisher, status_topic=STATUS_TOPIC)
        self.deps = PollerDeps(
            uploads=self.uploads,
            recorder=rec.recorder,
            outbox=rec.outbox,
            tiktok=self.tiktok,
            policy=self.policy,
            clock=self.clock,
        )

    async def uploaded(
        self,
        request_id: str = "req-1",
        *,
        publish_id: str = "v_pub_file~v2-1.1",
        mode: UploadMode = "direct",
        privacy: str = "PUBLIC_TO_EVERYONE",
        account_id: str = ACCOUNT,
    ) -> UploadRecord:
        """An upload the uploader has finished: `uploaded`, with its publish_id checkpointed."""
        cmd = UploadRequested.model_validate(
            {
                "request_id": request_id,
                "account_id": account_id,
                "mode": mode,
                "source": UrlSource(url="https://videos.example.com/a.mp4"),
                "post_info": PostInfo.model_validate({"privacy_level": privacy})
                if mode == "direct"
                else None,
            }
        )
        await self.uploads.create(cmd, source="ingest")
        await self.uploads.transition(
            request_id,
            Change(UploadState.UPLOADING, source="uploader", set_fields={"publish_id": publish_id}),
        )
        await self.uploads.transition(request_id, Change(UploadState.UPLOADED, source="uploader"))
        # The uploader announced it (through its own relay, not this test's publisher).
        owed = await self.uploads.get(request_id)
        assert owed is not None
        record = await self.uploads.settle_outbox(request_id, owed.outbox, next_try_at=self.clock())
        assert record is not None
        assert record.outbox == []
        return record

    async def relay_round(self) -> None:
        """One round of the outbox relay loop: send every due outbox."""
        # The store stamps entries with the wall clock (as Mongo would), not the poller's fake one.
        while (due := await self.uploads.claim_due_outbox(datetime.now(UTC), 30)) is not None:
            await self.deps.outbox.drain(due.request_id, leased=due)

    async def get(self, request_id: str = "req-1") -> UploadRecord:
        record = await self.uploads.get(request_id)
        assert record is not None
        return record

    async def poll_due(self, deps: PollerDeps | None = None) -> PollOutcome | None:
        """What the scheduler does once: claim the next due upload (at the fake time) and poll it."""
        claimed = await self.uploads.claim_due_poll(self.clock(), 30)
        if claimed is None:
            return None
        return await poll_once(claimed, deps or self.deps)

    async def poll_when_due(self, request_id: str = "req-1") -> PollOutcome | None:
        """Move the fake clock to the upload's next poll and do what the scheduler does then:
        claim it (the store leases a published upload while it is watched for post ids) and poll."""
        record = await self.get(request_id)
        if record.poll_next_at is None:
            return None
        self.clock.now = max(self.clock.now, record.poll_next_at)
        claimed = await self.uploads.claim_due_poll(self.clock(), 30)
        assert claimed is not None, "a due, tracked upload must be claimable"
        assert claimed.request_id == request_id
        return await poll_once(claimed, self.deps)

    def announced(self, request_id: str = "req-1") -> list[PublishStatusChanged]:
        """What was announced on the status topic about one upload, in order."""
        changes: list[PublishStatusChanged] = self.publisher.messages(STATUS_TOPIC, PublishStatusChanged)
        return [m for m in changes if m.request_id == request_id]

    def announced_states(self, request_id: str = "req-1") -> list[UploadState]:
        return [m.state for m in self.announced(request_id)]


POLICY = PollPolicy(
    min_interval=2.0,
    max_interval=60.0,
    backoff_factor=1.5,
    give_up_after=7200.0,
    post_id_watch=600.0,
    fetch_timeout=5.0,
)
