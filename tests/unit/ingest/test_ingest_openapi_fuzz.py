"""Schemathesis against ingest's own OpenAPI document, in-process (ASGI) over the fakes of
reelay_testing: whatever a client sends, no answer is a 5xx and every answer matches the status
codes, headers, content type and body schema the document gives for it.

Budget: REELAY_FUZZ_EXAMPLES examples per operation (and stateful scenarios), small by default so
that `make test` stays quick; a long run: `REELAY_FUZZ_EXAMPLES=2000 pytest tests/unit/ingest -k fuzz`.
"""

from __future__ import annotations

import os

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from reelay_ingest.app import create_app
from reelay_ingest.deps import IngestDeps
from reelay_ingest.main import policy_of
from reelay_testing.stores import FakeAccountStore, FakeUploadStore
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.recording import recording
from tests.unit.ingest.ingest_fakes import (
    ACCOUNT,
    API_KEY,
    TOPICS,
    CountingBlobStore,
    FakeTikTok,
    TopicFailingPublisher,
    make_settings,
)

EXAMPLES = int(os.environ.get("REELAY_FUZZ_EXAMPLES", "8"))
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Not promised by ingest, so not checked:
# - positive_data_acceptance: a request valid by the schema may still be refused by a rule the
#   schema cannot state (an unknown account, a privacy level the creator does not offer, ...).
# - negative_data_rejection: unknown query parameters are ignored (as FastAPI does everywhere),
#   which schemathesis counts as accepting invalid data.
NOT_PROMISED = [positive_data_acceptance, negative_data_rejection]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 8,  # the small budget of `make test` is the same run each time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


class Fakes:
    """The fakes behind the app under test; `reset` gives each stateful scenario a fresh world."""

    def __init__(self) -> None:
        self.uploads, self.accounts = FakeUploadStore(), FakeAccountStore()
        self.publisher, self.blobs = TopicFailingPublisher(), CountingBlobStore()
        self.reset()

    def reset(self) -> None:
        self.uploads.records.clear()
        self.uploads.archived.clear()
        self.accounts.records.clear()
        self.accounts.tokens.clear()
        self.accounts.add_connected(ACCOUNT)
        self.publisher.sent.clear()
        self.blobs.blobs.clear()


FAKES = Fakes()


def build_app() -> FastAPI:
    """The ingest app over FAKES, one connected account (ACCOUNT); video and callback URLs are not
    resolved (allow_private_urls), so nothing leaves the process."""
    ingest_settings = make_settings(allow_private_urls=True)
    uploads, publisher = FAKES.uploads, FAKES.publisher
    rec = recording(
        uploads, publisher, status_topic=TOPICS.publish_status, requested_topic=TOPICS.upload_requested
    )
    deps = IngestDeps(
        uploads=uploads,
        accounts=FAKES.accounts,
        publisher=publisher,
        recorder=rec.recorder,
        outbox=rec.outbox,
        blobs=FAKES.blobs,
        tiktok=FakeTikTok(),
        topics=TOPICS,
        policy=policy_of(ingest_settings),
    )
    return create_app(ingest_settings, deps)


schema = schemathesis.openapi.from_asgi("/openapi.json", build_app())


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH, excluded_checks=NOT_PROMISED)


class IngestScenarios(schema.as_state_machine()):
    """Chains of calls: an upload submitted, then read, listed and cancelled through the links
    schemathesis infers (request_id of the 202 into /v1/uploads/{request_id}, ...)."""

    def setup(self) -> None:
        FAKES.reset()  # what one scenario did must not change what the next one draws

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
        return {"headers": AUTH}

    def validate_response(
        self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: object
    ) -> None:
        case.validate_response(response, excluded_checks=NOT_PROMISED, headers=AUTH)


def test_call_sequences_answer_as_documented() -> None:
    IngestScenarios.run(
        settings=settings(FUZZ_SETTINGS, stateful_step_count=6, max_examples=max(2, EXAMPLES // 2))
    )
