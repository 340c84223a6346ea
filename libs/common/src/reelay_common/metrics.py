"""Reelay's Prometheus metric families, defined once for every process (served on /metrics).

Names carry their unit (`_seconds`, `_bytes`, `_total`); labels are bounded sets (endpoints,
states, error codes, topics, partitions), never request, account or publish ids. The dashboard in
deploy/grafana is checked against this module's families.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

from reelay_common.domain.errors import ReelayError

TIKTOK_REQUESTS = Counter(
    "reelay_tiktok_requests_total",
    "TikTok API calls by endpoint and outcome (`ok`, or TikTok's or Reelay's error code).",
    ["endpoint", "outcome"],
)
TIKTOK_REQUEST_SECONDS = Histogram(
    "reelay_tiktok_request_duration_seconds",
    "TikTok API call duration by endpoint (chunk PUTs included, as `video_upload`).",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TIKTOK_UPLOADED_BYTES = Counter(
    "reelay_tiktok_uploaded_bytes_total",
    "Video bytes TikTok acknowledged (206 or 201 on a chunk PUT); rate() of it is the throughput.",
)
UPLOAD_STATE_TRANSITIONS = Counter(
    "reelay_upload_state_transitions_total",
    "Uploads entering each state, by the source that moved them (ingest, uploader, poller, webhook).",
    ["state", "source"],
)
OUTBOX_SENT = Counter(
    "reelay_outbox_sent_total",
    "Outbox entries Kafka took, by kind (`status` announcements, `upload_requested` commands).",
    ["kind"],
)
OUTBOX_SEND_FAILURES = Counter(
    "reelay_outbox_send_failures_total",
    "Outbox send attempts Kafka did not take in time (the entries wait in Mongo for the relay).",
)
OUTBOX_PENDING_AGE_SECONDS = Histogram(
    "reelay_outbox_entry_age_seconds",
    "From an outbox entry's write to Kafka taking it: near 0 while Kafka is up, the outage when not.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
)
UPLOAD_DETECTION_DELAY_SECONDS = Histogram(
    "reelay_upload_detection_delay_seconds",
    "From `uploaded` (TikTok has every byte) to the recorded outcome, by outcome state and by who "
    "detected it (poller or webhook).",
    ["state", "source"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400),
)
STATUS_POLLS_PER_PUBLISH = Histogram(
    "reelay_poller_status_polls_per_publish",
    "status/fetch calls made for one publish, observed when its tracking ends.",
    buckets=(1, 2, 3, 5, 8, 13, 21, 34, 55, 89),
)
TOKEN_REFRESHES = Counter(
    "reelay_tiktok_token_refreshes_total",
    "TikTok token refreshes this process won, by outcome (refreshed, refused, no_refresh_token, error).",
    ["outcome"],
)
RATE_LIMIT_WAITS = Counter(
    "reelay_rate_limit_waits_total",
    "Times a TikTok call waited for the account's quota, by bucket.",
    ["bucket"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "reelay_rate_limit_wait_seconds_total",
    "Time spent waiting for the account's TikTok quota, by bucket.",
    ["bucket"],
)


def outcome_of(exc: BaseException) -> str:
    """A bounded outcome label for a failed call: the error's code, else its class name."""
    if isinstance(exc, ReelayError) and exc.code:
        return exc.code
    return type(exc).__name__


@contextmanager
def observe_tiktok_call(endpoint: str) -> Iterator[None]:
    """Count and time one TikTok call of `endpoint` (a path constant: a bounded label)."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except BaseException as exc:
        outcome = outcome_of(exc)
        raise
    finally:
        TIKTOK_REQUESTS.labels(endpoint=endpoint, outcome=outcome).inc()
        TIKTOK_REQUEST_SECONDS.labels(endpoint=endpoint).observe(time.perf_counter() - started)
