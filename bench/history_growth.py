"""Benchmark: does the cost of a request grow with the history the stack has stored?

On the default stack's state server (FerretDB v1.24.2 on SQLite, started here) and a real Kafka
(KAFKA_BOOTSTRAP_SERVERS), with the real ingest service (uvicorn, in-process) and the TikTok sandbox:
- ingest's accept latency (p50/p99 of sequential JSON `POST /v1/uploads`, answered 202 after Mongo
  holds the upload and Kafka acknowledged the command);
- one state transition's cost (`MongoUploadStore.transition`, accepted -> uploading),
with 1,000 and with 100,000 finished uploads stored, for two layouts side by side in one run:
- **in flight + history** (today): finished uploads are in `uploads`, the hot paths touch only
  `uploads_in_flight`;
- **one collection** (before): the finished uploads sit in the same collection as the work in
  flight, which is what every hot path read and updated before.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 uv run python bench/history_growth.py
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 uv run python bench/history_growth.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from reelay_common.adapters.mongo.uploads import MongoUploadStore, new_upload_document
from reelay_common.domain.messages import UploadRequested
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState
from reelay_ingest.main import run
from reelay_ingest.settings import IngestSettings
from state_store import ferretdb  # bench/ is the script's directory, so its sibling imports plainly
from tiktok_sandbox.testing import running_sandbox

API_KEY = "bench-key"
LAYOUTS = {"in flight + history": "uploads", "one collection (before)": "uploads_in_flight"}


def finished(n: int, account_id: str) -> dict[str, Any]:
    cmd = UploadRequested.model_validate(
        {
            "request_id": f"old-{n:07d}",
            "account_id": account_id,
            "mode": "inbox",
            "source": {"kind": "url", "url": f"http://127.0.0.1:9/{n}.mp4"},
        }
    )
    doc = new_upload_document(cmd, source="ingest", now=cmd.requested_at)
    doc["state"] = UploadState.INBOX_DELIVERED.value
    doc["publish_id"] = f"v_inbox_url~v2.{n}"
    doc["outbox"], doc["outbox_due_at"] = [], None  # a finished upload owes Kafka nothing
    return doc


async def fill(db: Any, collection: str, have: int, want: int, account_id: str) -> None:
    for lo in range(have, want, 1000):
        docs = [finished(n, account_id) for n in range(lo, min(want, lo + 1000))]
        await db[collection].insert_many(docs)
        # Every request_id ever accepted is claimed in `uploads_ids` too (what a real history holds).
        await db["uploads_ids"].insert_many([{"_id": d["_id"], "at": d["created_at"]} for d in docs])


async def connect_account(http: httpx.AsyncClient, sandbox: Any) -> str:
    user = sandbox.add_user(f"bench-{uuid.uuid4().hex[:8]}")
    tokens = sandbox.issue_tokens(user.open_id)
    account_id = f"acct-{user.open_id[:8]}"
    fields = ("open_id", "access_token", "refresh_token", "expires_in", "refresh_expires_in", "scope")
    resp = await http.post("/v1/accounts", json={"account_id": account_id, **{k: tokens[k] for k in fields}})
    resp.raise_for_status()
    return account_id


@contextlib.asynccontextmanager
async def running_ingest(
    uri: str, bootstrap: str, sandbox: Any, database: str, topic_prefix: str
) -> AsyncIterator[tuple[IngestSettings, int]]:
    """The real ingest service in-process (fresh database and topics, one partition), with its port;
    stopped at exit."""
    settings = IngestSettings(
        kafka_bootstrap_servers=bootstrap,
        mongodb_uri=uri,
        mongodb_database=database,
        topic_upload_requested=f"{topic_prefix}.requested.{database}",
        topic_publish_events=f"{topic_prefix}.events.{database}",
        topic_publish_status=f"{topic_prefix}.status.{database}",
        topic_partitions=1,
        tiktok_api_base_url=sandbox.base_url,
        api_keys=API_KEY,
        allow_private_urls=True,
        host="127.0.0.1",
        port=0,
    )
    stop = asyncio.Event()
    ports: list[int] = []
    service = asyncio.create_task(run(settings, stop, on_bound=ports.append))
    try:
        deadline = time.monotonic() + 60
        while not ports:
            if service.done() or time.monotonic() > deadline:
                service.result()
                raise RuntimeError("ingest did not start")
            await asyncio.sleep(0.1)
        yield settings, ports[0]
    finally:
        stop.set()
        await asyncio.wait_for(service, timeout=60)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def measure_layout(
    layout: str, uri: str, bootstrap: str, sizes: list[int], accepts: int, moves: int
) -> list[dict[str, Any]]:
    collection = LAYOUTS[layout]
    suffix = uuid.uuid4().hex[:8]
    rows = []
    async with (
        running_sandbox() as sandbox,
        running_ingest(uri, bootstrap, sandbox, f"bench_{suffix}", "bench") as (settings, port),
    ):
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        try:
            db = mongo[settings.mongodb_database]
            store = MongoUploadStore(db)
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
            ) as http:
                account_id = await connect_account(http, sandbox)
                have = 0
                for size in sorted(sizes):
                    await fill(db, collection, have, size, account_id)
                    have = size
                    latencies, ids = [], []
                    for i in range(accepts):
                        rid = f"new-{size}-{i}"
                        body = {
                            "request_id": rid,
                            "account_id": account_id,
                            "mode": "inbox",
                            "video_url": f"http://127.0.0.1:9/new-{i}.mp4",
                        }
                        t0 = time.perf_counter()
                        resp = await http.post("/v1/uploads", json=body)
                        latencies.append(time.perf_counter() - t0)
                        if resp.status_code != 202:
                            raise RuntimeError(f"accept answered {resp.status_code}: {resp.text}")
                        ids.append(rid)
                    transitions = []
                    for rid in ids[:moves]:
                        t0 = time.perf_counter()
                        moved = await store.transition(rid, Change(UploadState.UPLOADING, source="uploader"))
                        transitions.append(time.perf_counter() - t0)
                        assert moved is not None
                    # What this round accepted is work in flight; clear it so each round starts alike.
                    await db["uploads_in_flight"].delete_many({"_id": {"$regex": "^new-"}})
                    row = {
                        "layout": layout,
                        "stored": size,
                        "accept_p50": pct(latencies, 0.5),
                        "accept_p99": pct(latencies, 0.99),
                        "transition_ms": statistics.median(transitions) * 1000,
                    }
                    rows.append(row)
                    print(
                        f"  {layout:<26} {size:>7}: accept p50 {row['accept_p50']:7.1f} ms"
                        f"  p99 {row['accept_p99']:7.1f} ms  transition {row['transition_ms']:8.1f} ms",
                        flush=True,
                    )
        finally:
            await mongo.close()
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    print("\n| layout | finished uploads stored | accept p50 | accept p99 | one transition (median) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['layout']} | {r['stored']:,} | {r['accept_p50']:.1f} ms | {r['accept_p99']:.1f} ms |"
            f" {r['transition_ms']:.1f} ms |"
        )
    print("\n| layout | accept p50 growth | accept p99 growth | transition growth (target <= 2x) |")
    print("|---|---|---|---|")
    for layout in LAYOUTS:
        rs = [r for r in rows if r["layout"] == layout]
        if len(rs) < 2:
            continue
        lo, hi = rs[0], rs[-1]
        print(
            f"| {layout} | {hi['accept_p50'] / lo['accept_p50']:.2f}x |"
            f" {hi['accept_p99'] / lo['accept_p99']:.2f}x |"
            f" {hi['transition_ms'] / lo['transition_ms']:.2f}x |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 100_000])
    parser.add_argument("--accepts", type=int, default=40, help="accept requests measured per size")
    parser.add_argument("--transitions", type=int, default=10, help="transitions measured per size")
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 stored, fewer samples")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.accepts, args.transitions = [1000, 10_000], 20, 5
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise SystemExit("set KAFKA_BOOTSTRAP_SERVERS to a running Kafka (make test and make up start one)")
    rows: list[dict[str, Any]] = []
    for layout in LAYOUTS:
        with (
            tempfile.TemporaryDirectory(prefix="reelay-history-") as tmp,
            ferretdb("sqlite", Path(tmp)) as uri,
        ):
            rows += await measure_layout(layout, uri, bootstrap, args.sizes, args.accepts, args.transitions)
    report(rows)


if __name__ == "__main__":
    asyncio.run(main())
