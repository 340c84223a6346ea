"""Benchmark: status/fetch calls per completed publish, and the delay from TikTok finishing to Mongo
knowing, for the learnt poll schedule against today's backoff and the prototype's 2-minute check.

Three real stacks run side by side in one run (tests/e2e/stack.py: the TikTok sandbox, ingest, the
uploader and the status-poller as processes, over the real Kafka and Mongo-wire server of
KAFKA_BOOTSTRAP_SERVERS and MONGODB_URI, each with its own database and topics):

- `backoff`: POLLER_LEARN_SCHEDULE=false, no webhooks: today's fixed backoff (2 s x1.5, cap 60 s);
- `learned`: the learnt schedule, no webhooks;
- `learned+webhooks`: the learnt schedule, and the sandbox sends its webhooks to ingest.

Each sandbox draws every publish's processing time as (base + per-MB x size) x exp(N(0, spread))
(SANDBOX_PROCESSING_*), seeded alike, so processing grows with the video's size and spreads around
it. Videos are real MP4 files of three sizes (three size classes), streamed through ingest as
direct posts over several accounts, paced per account. A warm-up batch is run first and left out
of the figures; the measured batch follows. From the sandbox's own record of each publish: the
status/fetch calls it answered about it, its drawn processing time and when its status became
terminal; from Mongo: the upload's history entry of its terminal state. Delay = that entry's time
minus the sandbox's completion time (one machine, one clock).

The prototype's fixed 2-minute check is computed, not run, from the same drawn processing times t
of the `learned` stack's measured publishes: calls = ceil(t / 120), delay = 120 * ceil(t / 120) - t.

The sandbox's init limit (6 a minute per token) and daily direct-post cap are raised for the run
(they pace uploads, not tracking); the status/fetch limit stays TikTok's 30 a minute per token.

    KAFKA_BOOTSTRAP_SERVERS=... MONGODB_URI=... uv run python bench/status_tracking.py            # ~6 min
    KAFKA_BOOTSTRAP_SERVERS=... MONGODB_URI=... uv run python bench/status_tracking.py --quick    # ~2 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient
from reelay_common.domain.profiles import LearnedSchedule, ProcessingProfile, size_class
from reelay_status_poller.learning import next_offset
from reelay_status_poller.main import learning_of, policy_of
from reelay_status_poller.settings import PollerSettings
from tiktok_sandbox.media import write_sample_mp4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.e2e
from tests.e2e.flows import connect_account
from tests.e2e.stack import Stack, running_stack

TERMINAL = {"published", "inbox_delivered", "failed", "unconfirmed"}
PROTOTYPE_CHECK_SECONDS = 120.0
# Sizes (bytes) and how often each comes, in order: most videos are small.
SIZES = (250_000, 1_000_000, 4_000_000)
SIZE_PATTERN = (0, 0, 0, 1, 1, 2)


@dataclass(frozen=True)
class Scale:
    accounts: int
    warmup_per_account: int
    measured_per_account: int
    every_seconds: float  # one upload per account this often
    base_seconds: float
    per_mb_seconds: float
    spread: float


FULL = Scale(6, 3, 6, 24.0, base_seconds=8.0, per_mb_seconds=6.0, spread=0.35)
# QUICK scales the processing times down by half (and the counts further) to end in ~2 minutes.
QUICK = Scale(3, 3, 4, 12.0, base_seconds=4.0, per_mb_seconds=3.0, spread=0.35)

VARIANTS: dict[str, dict[str, str]] = {
    "backoff": {"POLLER_LEARN_SCHEDULE": "false", "SANDBOX_WEBHOOK_URL": ""},
    "learned": {"POLLER_LEARN_SCHEDULE": "true", "SANDBOX_WEBHOOK_URL": ""},
    "learned+webhooks": {"POLLER_LEARN_SCHEDULE": "true"},
}


@dataclass
class Run:
    name: str
    stack: Stack
    accounts: list[str] = field(default_factory=list)
    batches: dict[str, list[str]] = field(default_factory=lambda: {"warmup": [], "measured": []})


def stack_env(scale: Scale, variant: dict[str, str]) -> dict[str, str]:
    return {
        # Today's production schedule, not the e2e stack's shortened one.
        "POLLER_MIN_INTERVAL_SECONDS": "2",
        "POLLER_MAX_INTERVAL_SECONDS": "60",
        "POLLER_BACKOFF_FACTOR": "1.5",
        "POLLER_SCHEDULER_CONCURRENCY": "16",
        "POLLER_ARCHIVE_GRACE_SECONDS": "60",
        "SANDBOX_PROCESSING_DELAY_SECONDS": str(scale.base_seconds),
        "SANDBOX_PROCESSING_SECONDS_PER_MB": str(scale.per_mb_seconds),
        "SANDBOX_PROCESSING_SPREAD": str(scale.spread),
        "SANDBOX_PROCESSING_SEED": "11",
        "SANDBOX_RATE_LIMIT_INIT": "600",
        "SANDBOX_DIRECT_POST_DAILY_CAP": "100000",
        "UPLOADER_MAX_IN_FLIGHT_PER_PARTITION": "32",
        "REELAY_LOG_LEVEL": "warning",
        **variant,
    }


async def submit(http: httpx.AsyncClient, run: Run, account: str, video: Path) -> str:
    with video.open("rb") as f:
        resp = await http.post(
            f"{run.stack.ingest_url}/v1/uploads",
            headers=run.stack.headers,
            data={
                "account_id": account,
                "mode": "direct",
                "post_info": json.dumps({"privacy_level": "SELF_ONLY"}),
            },
            files={"file": (video.name, f, "video/mp4")},
        )
    assert resp.status_code == 202, resp.text
    return str(resp.json()["request_id"])


async def batch(
    http: httpx.AsyncClient, run: Run, name: str, per_account: int, scale: Scale, videos: list[Path]
) -> None:
    """Each account uploads `per_account` videos, one every `every_seconds`, accounts staggered."""

    async def one_account(i: int, account: str) -> None:
        await asyncio.sleep(scale.every_seconds * i / len(run.accounts))
        for n in range(per_account):
            video = videos[SIZE_PATTERN[(i + n) % len(SIZE_PATTERN)]]
            run.batches[name].append(await submit(http, run, account, video))
            await asyncio.sleep(scale.every_seconds)

    await asyncio.gather(*(one_account(i, a) for i, a in enumerate(run.accounts)))


def mongo_docs(mongo: MongoClient[dict[str, Any]], run: Run, ids: list[str]) -> dict[str, dict[str, Any]]:
    db = mongo[run.stack.database]
    docs: dict[str, dict[str, Any]] = {}
    for name in ("uploads_in_flight", "uploads"):
        for doc in db[name].find(
            {"_id": {"$in": ids}}, {"state": 1, "history": 1, "publish_id": 1, "tracking_started_at": 1}
        ):
            docs.setdefault(doc["_id"], doc)
    return docs


async def wait_terminal(mongo: MongoClient[dict[str, Any]], run: Run, ids: list[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        docs = await asyncio.to_thread(mongo_docs, mongo, run, ids)
        if len(docs) == len(ids) and all(d["state"] in TERMINAL for d in docs.values()):
            return
        await asyncio.sleep(2)
    raise RuntimeError(f"{run.name}: not every upload settled in {limit:.0f} s\n{run.stack.logs()}")


async def run_all(
    runs: list[Run], scale: Scale, videos: list[Path], mongo: MongoClient[dict[str, Any]]
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        for run in runs:
            for _ in range(scale.accounts):
                account, _open_id = await connect_account(http, run.stack)
                run.accounts.append(account)
        for name, per_account in (
            ("warmup", scale.warmup_per_account),
            ("measured", scale.measured_per_account),
        ):
            started = time.monotonic()
            await asyncio.gather(*(batch(http, run, name, per_account, scale, videos) for run in runs))
            await asyncio.gather(*(wait_terminal(mongo, run, run.batches[name], 600) for run in runs))
            print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def measure(mongo: MongoClient[dict[str, Any]], run: Run, ids: list[str]) -> list[dict[str, float]]:
    """Per publish: status/fetch calls (the sandbox's count), processing time, delay to Mongo."""
    pubs = {
        p["publish_id"]: p
        for p in httpx.get(f"{run.stack.sandbox_url}/sandbox/publishes").json()["publishes"]
    }
    rows = []
    for doc in mongo_docs(mongo, run, ids).values():
        pub = pubs[doc["publish_id"]]
        entry = next(h for h in doc["history"] if h["state"] == doc["state"])
        at = entry["at"].timestamp()  # tz-aware: the client is
        tracked = doc["tracking_started_at"].timestamp() if doc.get("tracking_started_at") else at
        rows.append(
            {
                "calls": float(pub["status_fetches"]),
                "processing": pub["completed_at"] - pub["processing_started_at"],
                "size": float(pub["video_size"] or 0),
                "order": pub["processing_started_at"],
                "delay": at - pub["completed_at"],
                # Before the poller even tracks it (uploader -> Kafka -> poller): no schedule helps there.
                "lag": tracked - pub["processing_started_at"],
                # The part a schedule decides: from TikTok finishing, or tracking starting if later.
                "after_tracking": at - max(pub["completed_at"], tracked),
                "ok": float(doc["state"] == "published"),
            }
        )
    return rows


def simulate(rows: list[dict[str, float]], *, learn: bool) -> tuple[list[float], list[float]]:
    """The poller's own schedule code on the drawn processing times, with no infrastructure at all
    (tracking starts as TikTok starts, a poll answers at once): calls and delays per publish, the
    publishes in the order TikTok started them, profiles per size class learnt as they settle."""
    settings = PollerSettings.model_validate({"learn_schedule": learn})
    policy, schedule = policy_of(settings), learning_of(settings) or LearnedSchedule()
    profiles: dict[str, ProcessingProfile] = {}
    calls, delays = [], []
    for row in sorted(rows, key=lambda r: r["order"]):
        klass = size_class(int(row["size"]))
        profile = profiles.get(klass)
        trusted = learn and schedule.trusts(profile)
        offsets = schedule.planned_offsets(profile, cap=policy.max_interval) if trusted and profile else []

        def after(t: float, n: int, offsets: list[float] = offsets, trusted: bool = trusted) -> float:
            if not trusted:
                return t + policy.interval(n - 1)  # after the n-th poll, as the handlers do
            return next_offset(
                offsets,
                t,
                last_polled=t,
                min_interval=policy.min_interval,
                max_interval=policy.max_interval,
                backoff=policy.interval,
            )

        first = 0.0
        if trusted:
            first = next_offset(
                offsets,
                0.0,
                min_interval=policy.min_interval,
                max_interval=policy.max_interval,
                backoff=policy.interval,
            )
        t, last, n = first, 0.0, 1
        while t < row["processing"]:
            last, t, n = t, after(t, n), n + 1
        calls.append(float(n))
        delays.append(t - row["processing"])
        profiles[klass] = profiles.get(klass, ProcessingProfile()).observe(last, t)
    return calls, delays


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def table_row(
    label: str,
    calls: list[float],
    delays: list[float],
    base: tuple[float, float] | None,
    rows: list[dict[str, float]],
) -> str:
    ratio = ""
    if base is None:
        ratio = " | |"
    else:
        ratio = (
            f" | {statistics.median(calls) / base[0]:.2f}x | {pct(delays, 0.95) / base[1]:.3f}x"
            if base[1]
            else " | | "
        )
    return (
        f"| {label} | {len(calls)} | {statistics.median(calls):.0f} | {statistics.mean(calls):.2f} "
        f"| {pct(calls, 0.95):.0f} | {statistics.median(delays):.2f} | {pct(delays, 0.95):.2f} "
        f"| {max(delays):.2f}{ratio} | {pct([r['lag'] for r in rows], 0.5):.1f} / "
        f"{pct([r['lag'] for r in rows], 0.95):.1f} | {pct([r['after_tracking'] for r in rows], 0.95):.2f} |"
    )


def start_stacks(stacks: ExitStack, scale: Scale, workdir: Path, *, kafka: str, mongo_uri: str) -> list[Run]:
    """The three stacks, started at once (each waits for its services' health, one by one); each
    one is stopped when `stacks` closes, also when another failed to start."""
    managers = {
        name: running_stack(
            kafka_bootstrap_servers=kafka,
            mongodb_uri=mongo_uri,
            workdir=workdir / name.replace("+", "-"),
            blob_store="local",
            extra_env=stack_env(scale, variant),
        )
        for name, variant in VARIANTS.items()
    }
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = {name: pool.submit(cm.__enter__) for name, cm in managers.items()}
    runs = []
    failure: BaseException | None = None
    for name, future in futures.items():
        if future.exception() is not None:
            failure = failure or future.exception()
            continue
        stacks.push(managers[name].__exit__)
        runs.append(Run(name, future.result()))
    if failure is not None:
        raise failure
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer publishes, processing times halved")
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    kafka, mongo_uri = os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["MONGODB_URI"]
    workdir = Path(tempfile.mkdtemp(prefix="reelay-bench-tracking-"))
    started = datetime.now(UTC)
    t0 = time.monotonic()
    results: dict[str, list[dict[str, float]]] = {}
    stats: dict[str, dict[str, Any]] = {}
    try:
        videos = []
        for size in SIZES:
            path = workdir / f"video-{size}.mp4"
            write_sample_mp4(path, size)
            videos.append(path)
        with ExitStack() as stacks, MongoClient(mongo_uri, tz_aware=True) as mongo:
            runs = start_stacks(stacks, scale, workdir, kafka=kafka, mongo_uri=mongo_uri)
            asyncio.run(run_all(runs, scale, videos, mongo))
            for run in runs:
                results[run.name] = measure(mongo, run, run.batches["measured"])
                results[f"{run.name}:warmup"] = measure(mongo, run, run.batches["warmup"])
                stats[run.name] = httpx.get(f"{run.stack.sandbox_url}/sandbox/stats").json()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    learned = results["learned"]
    proto_calls = [float(math.ceil(r["processing"] / PROTOTYPE_CHECK_SECONDS)) for r in learned]
    proto_delays = [
        PROTOTYPE_CHECK_SECONDS * c - r["processing"] for c, r in zip(proto_calls, learned, strict=True)
    ]
    base = (statistics.median(proto_calls), pct(proto_delays, 0.95))
    processing = [r["processing"] for r in learned]

    print(
        f"date: {started:%Y-%m-%d %H:%M} UTC; machine: {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, load {os.getloadavg()[0]:.1f}); "
        f"wall time {time.monotonic() - t0:.0f} s"
    )
    print(f"command: uv run python bench/status_tracking.py {' '.join(sys.argv[1:])}".strip())
    sizes = ", ".join(str(s) for s in SIZES)
    shares = "/".join(str(SIZE_PATTERN.count(i)) for i in range(len(SIZES)))
    print(
        f"scale: {scale.accounts} accounts, warm-up {scale.warmup_per_account} + measured "
        f"{scale.measured_per_account} uploads each per stack; sizes {sizes} bytes "
        f"({shares} of {len(SIZE_PATTERN)}); processing "
        f"({scale.base_seconds:g} s + {scale.per_mb_seconds:g} s/MB) x lognormal(sigma {scale.spread:g}): "
        f"measured p5 {pct(processing, 0.05):.1f} s, p50 {statistics.median(processing):.1f} s, "
        f"p95 {pct(processing, 0.95):.1f} s"
    )
    print()
    print(
        "| schedule | publishes | calls median | calls mean | calls p95 | delay p50 s | delay p95 s "
        "| delay max s | calls median vs 2-min check | delay p95 vs 2-min check "
        "| tracking lag p50 / p95 s | delay after tracking p95 s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(table_row("prototype: fixed 2-minute check (computed)", proto_calls, proto_delays, None, []))
    for name, label in (
        ("backoff", "today's backoff (2 s x1.5, cap 60 s), no webhooks"),
        ("learned:warmup", "learnt, no webhooks: warm-up batch (not a result)"),
        ("learned", "learnt, no webhooks (after warm-up)"),
        ("learned+webhooks", "learnt + webhooks (after warm-up)"),
    ):
        rows = results[name]
        print(table_row(label, [r["calls"] for r in rows], [r["delay"] for r in rows], base, rows))
    # The same drawn times through the schedules alone (warm-up first, as above): what the schedule
    # decides when the machine adds nothing.
    every = results["learned:warmup"] + results["learned"]
    measured = {id(r) for r in results["learned"]}
    for learn, label in (
        (False, "simulated, no lag: today's backoff"),
        (True, "simulated, no lag: learnt (after warm-up)"),
    ):
        sim_calls, sim_delays = simulate(every, learn=learn)
        ordered = sorted(every, key=lambda r: r["order"])
        keep = [i for i, r in enumerate(ordered) if id(r) in measured]
        print(table_row(label, [sim_calls[i] for i in keep], [sim_delays[i] for i in keep], base, []))
    print()
    for name, s in stats.items():
        responses = s.get("responses", {})
        limited = sum(v for k, v in responses.items() if k.startswith("status_fetch:429"))
        calls = s.get("calls", {}).get("status_fetch", 0)
        done = len(results[name]) + len(results[f"{name}:warmup"])
        published = sum(int(r["ok"]) for r in results[name] + results[f"{name}:warmup"])
        print(
            f"sandbox stats, {name}: status_fetch calls {calls} for {done} publishes "
            f"({published} published; {calls / max(done, 1):.2f} a publish, warm-up included), 429s {limited}"
        )


if __name__ == "__main__":
    main()
