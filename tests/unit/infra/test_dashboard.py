"""Specification of deploy/grafana/reelay-dashboard.json: every query names only metrics that
Reelay's processes really export (the live prometheus_client registries), and the dashboard shows
what an operator asks for first."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from reelay_common import metrics
from reelay_common.adapters.kafka import consumer, publisher
from reelay_ingest.observe import IngestMetrics
from reelay_status_poller import scheduler

# Imported for their side effect: each module registers its families in REGISTRY on import.
PROCESS_MODULES = (consumer, publisher, metrics, scheduler)
DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "reelay-dashboard.json"
METRIC = re.compile(r"\breelay_[a-z0-9_]+")


def exported_sample_names() -> set[str]:
    """Every sample name the processes expose (counters' _total, histograms' _bucket/_sum/_count)."""
    names: set[str] = set()
    for registry in (REGISTRY, IngestMetrics().registry):
        for family in registry.collect():
            if family.type == "counter":
                names |= {f"{family.name}_total"}
            elif family.type == "histogram":
                names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
            else:
                names.add(family.name)
    return names


@pytest.fixture(scope="module")
def queries() -> list[tuple[str, str]]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def test_every_query_names_exported_metrics_only(queries: list[tuple[str, str]]) -> None:
    exported = exported_sample_names()
    for title, expr in queries:
        used = set(METRIC.findall(expr))
        assert used, f"{title}: no Reelay metric in {expr}"
        assert used <= exported, f"{title}: {sorted(used - exported)} are not exported"


def test_shows_what_an_operator_looks_for(queries: list[tuple[str, str]]) -> None:
    text = " ".join(expr for _, expr in queries)
    for family in (
        "reelay_tiktok_uploaded_bytes_total",  # throughput
        "reelay_upload_state_transitions_total",  # uploads by state
        "reelay_tiktok_requests_total",  # failures by code, TikTok errors
        "reelay_kafka_consumer_lag_records",  # lag
        "reelay_tiktok_request_duration_seconds_bucket",  # TikTok latency
        "reelay_rate_limit_waits_total",  # rate-limit waits
        "reelay_upload_detection_delay_seconds_bucket",  # detection delay
    ):
        assert family in text, family


def test_the_check_would_catch_a_misspelt_metric() -> None:
    assert "reelay_tiktok_request_total" not in exported_sample_names()
