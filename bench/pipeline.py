"""Benchmark: many small uploads over many accounts, end to end, against the bound TikTok's limits set.

The whole stack runs as real processes (tests/e2e/stack.py: the TikTok sandbox with its real
per-token limits, ingest, the uploader, the status-poller) on the real Kafka and Mongo-wire server
of KAFKA_BOOTSTRAP_SERVERS and MONGODB_URI (fresh topics and database). The videos are small MP4s
served by a stdlib HTTP server process (URL uploads: what another service hands Reelay for a small
video it already hosts), posted as direct posts (SELF_ONLY). Every request is POSTed to ingest at
once (round-robin over the accounts, `--concurrency` in flight); the clock runs from the first
POST to the last terminal state in Mongo's history (the time the status-poller recorded it).

The bound is the earliest time the limits allow, with the processing delay the sandbox is told
to take. Per account, the k-th call (from 0) of a bucket limited to L per window W cannot be sent
before floor(k / L) * W; an upload needs c_b calls of bucket b (init 1, creator_info 1 from the
uploader, status/fetch at least 1), then TikTok takes D to process it, so

    bound = max over buckets b of floor((n * c_b - 1) / L_b) * W + D,   n = uploads per account

(the PUT of a small file and the HTTP round trips are left out: the bound is a floor). The target
is wall time <= 1.2x the bound. Without `--webhooks` the poller learns the outcome from
status/fetch alone; with it, the sandbox also sends TikTok's webhooks to ingest.

    set -a; . infra.env; set +a; uv run python bench/pipeline.py            # 1,000 uploads over 100 accounts
    set -a; . infra.env; set +a; uv run python bench/pipeline.py --quick    # 100 over 10

`--store ferretdb-postgresql` runs on a private FerretDB started here instead of MONGODB_URI's;
`--webhooks` has the sandbox send TikTok's webhooks; `--profile` counts each service's Mongo
commands and their round-trip time (bench/profile_hook); `--uploader-replicas 2` adds a replica.
Results and what limits them: bench/RESULTS.md, "The pipeline against TikTok's limits".

Everything is bounded by `--timeout` seconds, so the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from ingest_load import state_server  # bench/ is the script's directory: siblings import plainly
from pymongo import AsyncMongoClient
from tiktok_sandbox.media import write_sample_mp4
from tiktok_sandbox.settings import SandboxSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.e2e
from tests.e2e.flows import connect_account
from tests.e2e.stack import Service, Stack, free_port, running_stack

TERMINAL = ("published", "inbox_delivered", "failed", "unconfirmed", "cancelled")
VIDEO_BYTES = 1_000_000  # "small": one chunk, well under TikTok's 5 MB single-chunk threshold


@dataclass(frozen=True)
class Bound:
    """The floor the per-token limits and the processing delay put under the whole run."""

    per_account: int
    window: float
    limits: dict[str, int]
    calls_per_upload: dict[str, int]
    processing: float

    def waits(self) -> dict[str, float]:
        """Per bucket: when its last call of an account can be sent at the earliest."""
        return {
            b: math.floor((self.per_account * c - 1) / self.limits[b]) * self.window
            for b, c in self.calls_per_upload.items()
        }

    @property
    def seconds(self) -> float:
        return max(self.waits().values()) + self.processing

    def formula(self) -> str:
        terms = ", ".join(
            f"{b}: floor(({self.per_account}*{self.calls_per_upload[b]}-1)/{self.limits[b]})*{self.window:g}"
            f" = {w:g}"
            for b, w in self.waits().items()
        )
        return f"bound = max({terms}) + D {self.processing:g} = {self.seconds:g} s"


def bound_of(per_account: int, processing: float) -> Bound:
    """The bound for the sandbox's own limits (its defaults follow TikTok's published ones)."""
    s = SandboxSettings()
    return Bound(
        per_account=per_account,
        window=s.rate_limit_window_seconds,
        limits={
            "init": s.rate_limit_init,
            "creator_info": s.rate_limit_creator_info,
            "status": s.rate_limit_status,
        },
        calls_per_upload={"init": 1, "creator_info": 1, "status": 1},
        processing=processing,
    )


@contextmanager
def video_server(directory: Path) -> Iterator[str]:
    """The small video over HTTP from a stdlib server process (threaded); its base URL."""
    port = free_port()
    proc = subprocess.Popen(  # our own interpreter, a stdlib module
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.head(f"http://127.0.0.1:{port}/video.mp4", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the video server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def start_uploader_replica(stack: Stack, index: int) -> None:
    """Another uploader process in the same consumer group, with ops on a port of its own."""
    port = free_port()
    first = stack.services["uploader"]
    name = f"uploader-{index}"
    stack.services[name] = Service(
        name=name,
        module=first.module,
        health_url=f"http://127.0.0.1:{port}/healthz",
        log_path=first.log_path.with_name(f"{name}.log"),
    )
    env, stack.env = stack.env, {**stack.env, "UPLOADER_OPS_PORT": str(port)}
    try:
        stack.start(name)
    finally:
        stack.env = env


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(stack: Stack, names: list[str], timeout: float = 90.0) -> None:
    """Until every consumer holds its partitions (a rebalance mid-run would be measured)."""
    deadline = time.monotonic() + timeout
    for name in names:
        url = stack.services[name].health_url.replace("/healthz", "/readyz")
        while not ready(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in {timeout:g} s:\n{stack.services[name].tail()}")
            time.sleep(0.5)


async def connect_accounts(stack: Stack, count: int) -> list[str]:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        slots = asyncio.Semaphore(8)

        async def one() -> str:
            async with slots:
                account_id, _open_id = await connect_account(http, stack)
                return account_id

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def submit(
    stack: Stack, accounts: list[str], uploads: int, video_url: str, concurrency: int
) -> dict[str, Any]:
    """POST every upload (round-robin over the accounts); the first send time and each 202's time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    order = [(i, accounts[i % len(accounts)]) for i in range(uploads)]
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in order:
        queue.put_nowait(item)
    accepted: dict[str, float] = {}
    errors: dict[str, int] = defaultdict(int)
    async with httpx.AsyncClient(
        base_url=stack.ingest_url, headers=stack.headers, timeout=60, limits=limits
    ) as http:
        await http.get("/healthz")  # warm connections are the generator's, not the pipeline's, cost
        first = time.time()

        async def worker() -> None:
            while not queue.empty():
                i, account_id = queue.get_nowait()
                body = {
                    "request_id": f"pipe-{i:05d}",
                    "account_id": account_id,
                    "mode": "direct",
                    "video_url": f"{video_url}?i={i}",
                    "post_info": {"privacy_level": "SELF_ONLY", "title": f"pipeline {i}"},
                }
                resp = await http.post("/v1/uploads", json=body)
                if resp.status_code == 202:
                    accepted[body["request_id"]] = time.time()
                else:
                    errors[f"http_{resp.status_code}:{resp.text[:120]}"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"first": first, "accepted": accepted, "errors": dict(errors)}


async def wait_terminal(uri: str, database: str, uploads: int, within: float) -> int:
    """Until every upload is terminal in Mongo (in flight or archived), or `within` seconds; how many
    are (an upload being archived is in both collections for a moment: counted once)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        db = client[database]
        deadline = time.monotonic() + within
        done: set[str] = set()
        while time.monotonic() < deadline:
            for name in ("uploads_in_flight", "uploads"):
                query = {"state": {"$in": list(TERMINAL)}}
                done.update([str(d["_id"]) async for d in db[name].find(query, {"_id": 1})])
            if len(done) >= uploads:
                break
            await asyncio.sleep(1.0)
        return len(done)
    finally:
        await client.close()


async def read_uploads(uri: str, database: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = client[database]
        docs: dict[str, dict[str, Any]] = {}
        for name in ("uploads", "uploads_in_flight"):  # in flight wins: it is the newer copy
            async for doc in db[name].find({}, {"request_id": 1, "account_id": 1, "state": 1, "history": 1}):
                docs[str(doc.get("request_id", doc["_id"]))] = doc
        return list(docs.values())
    finally:
        await client.close()


def metric_sums(text: str, name: str) -> dict[str, float]:
    """Prometheus text: the samples of `name`, keyed by their labels."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if m:
            out[m.group(1) or ""] = out.get(m.group(1) or "", 0.0) + float(m.group(2))
    return out


def scrape(stack: Stack, names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = httpx.get(
                stack.services[name].health_url.replace("/healthz", "/metrics"), timeout=5
            ).text
        except httpx.HTTPError:
            out[name] = ""
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_cpu(stack: Stack) -> dict[str, float]:
    out = {}
    for name, svc in stack.services.items():
        if svc.process is not None and svc.process.poll() is None:
            out[name] = cpu_seconds(svc.process.pid)
    return out


def mongo_profile(directory: Path, stack: Stack) -> dict[str, dict[str, list[float]]]:
    """The profile hook's per-process Mongo command counts and seconds, by service."""
    names = {svc.process.pid: name for name, svc in stack.services.items() if svc.process is not None}
    out: dict[str, dict[str, list[float]]] = {}
    for path in directory.glob("*.json"):
        name = names.get(int(path.stem))
        if name is not None:
            out[name] = json.loads(path.read_text())["commands"]
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def phase_times(doc: dict[str, Any]) -> dict[str, float]:
    """The first time the upload reached each state, epoch seconds."""
    seen: dict[str, float] = {}
    for entry in doc.get("history", []):
        at = entry["at"]
        if isinstance(at, datetime):
            seen.setdefault(entry["state"], at.timestamp())
    return seen


def analyse(
    run: dict[str, Any], docs: list[dict[str, Any]], publishes: list[dict[str, Any]], bound: Bound
) -> dict[str, Any]:
    t0 = run["first"]
    per_account: dict[str, list[dict[str, float]]] = defaultdict(list)
    states: dict[str, int] = defaultdict(int)
    phases: dict[str, list[float]] = defaultdict(list)
    last_terminal = t0
    for doc in docs:
        seen = phase_times(doc)
        states[doc["state"]] += 1
        terminal = min((seen[s] for s in TERMINAL if s in seen), default=None)
        accepted = seen.get("accepted")
        uploaded = seen.get("uploaded")
        if accepted is not None:
            phases["POST -> accepted (from t0)"].append(accepted - t0)
        if accepted is not None and uploaded is not None:
            phases["accepted -> uploaded"].append(uploaded - accepted)
        if uploaded is not None and terminal is not None:
            phases["uploaded -> terminal"].append(terminal - uploaded)
            phases["uploaded -> terminal, minus D"].append(terminal - uploaded - bound.processing)
        if terminal is not None:
            last_terminal = max(last_terminal, terminal)
            per_account[doc["account_id"]].append({"terminal": terminal - t0})
    inits: dict[str, list[float]] = defaultdict(list)
    for p in publishes:
        inits[p["open_id"]].append(float(p["created_at"]) - t0)
    firsts = sorted(min(v) for v in inits.values())
    lasts = sorted(max(v) for v in inits.values())
    account_done = sorted(max(r["terminal"] for r in rows) for rows in per_account.values())
    wall = last_terminal - t0
    # Held up by the others: done later than the median account by more than a fifth of the bound
    # (every account has the same work and the same limits, so fairness means a narrow spread).
    slack = pct(account_done, 0.5) + 0.2 * bound.seconds if account_done else math.inf
    starved = [a for a, rows in per_account.items() if max(r["terminal"] for r in rows) > slack]
    return {
        "wall": wall,
        "states": dict(states),
        "phases": {k: (pct(v, 0.5), pct(v, 0.99), max(v)) for k, v in phases.items()},
        "first_init": (firsts[0], pct(firsts, 0.5), firsts[-1]) if firsts else None,
        "last_init": (lasts[0], pct(lasts, 0.5), lasts[-1]) if lasts else None,
        "account_done": (account_done[0], pct(account_done, 0.5), account_done[-1]) if account_done else None,
        "starved": len(starved),
        "inits": len(publishes),
        "submit_s": max(run["accepted"].values()) - t0 if run["accepted"] else float("nan"),
    }


def main() -> None:  # one linear script: start, run, read, print
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 uploads over 10 accounts")
    parser.add_argument("--uploads", type=int, help="uploads in all (default 1000; quick 100)")
    parser.add_argument("--accounts", type=int, help="accounts they are spread over (default 100; quick 10)")
    parser.add_argument("--processing-delay", type=float, default=10.0, help="TikTok's processing time D, s")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topics (the default: 6)")
    parser.add_argument("--uploader-replicas", type=int, default=1)
    parser.add_argument(
        "--max-in-flight", type=int, help="UPLOADER_MAX_IN_FLIGHT_PER_PARTITION (default: the service's)"
    )
    parser.add_argument(
        "--webhooks", action="store_true", help="the sandbox sends TikTok's webhooks to ingest"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="POSTs in flight from the load generator")
    parser.add_argument(
        "--store",
        choices=["env", "ferretdb-sqlite", "ferretdb-postgresql"],
        default="env",
        help="the state server: MONGODB_URI's (default) or a private FerretDB started here",
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds the run may take after the first POST (540; quick 150)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="count every service's Mongo commands and their round-trip time (bench/profile_hook)",
    )
    parser.add_argument("--keep-logs", type=Path, help="copy the services' logs here")
    args = parser.parse_args()
    uploads = args.uploads or (100 if args.quick else 1000)
    accounts = args.accounts or (10 if args.quick else 100)
    if uploads % accounts:
        parser.error("--uploads must be a multiple of --accounts (the same count per account)")
    bound = bound_of(uploads // accounts, args.processing_delay)
    # Inside the caps with the stack's start-up: about 2 minutes quick, 10 minutes in full.
    timeout = args.timeout or (150.0 if args.quick else 540.0)
    kafka = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    workdir = Path(tempfile.mkdtemp(prefix="reelay-bench-pipeline-"))
    started = datetime.now(UTC)
    (workdir / "videos").mkdir()
    write_sample_mp4(workdir / "videos" / "video.mp4", VIDEO_BYTES)
    extra = {
        "REELAY_BLOB_STORE": "local",
        "REELAY_BLOB_DIR": str(workdir / "blobs"),
        "REELAY_TOPIC_PARTITIONS": str(args.partitions),
        "REELAY_LOG_LEVEL": "info",
        "SANDBOX_PROCESSING_DELAY_SECONDS": str(args.processing_delay),
        "SANDBOX_WEBHOOK_URL": "",  # none: the poller learns outcomes from status/fetch alone
        # The services' own poll schedule and archiving, not the e2e stack's quick ones.
        "POLLER_MIN_INTERVAL_SECONDS": "2",
        "POLLER_MAX_INTERVAL_SECONDS": "60",
        "POLLER_ARCHIVE_GRACE_SECONDS": "60",
        "POLLER_ARCHIVE_INTERVAL_SECONDS": "5",
        **({"UPLOADER_MAX_IN_FLIGHT_PER_PARTITION": str(args.max_in_flight)} if args.max_in_flight else {}),
    }
    if args.profile:
        (workdir / "profile").mkdir()
        hook = str(Path(__file__).resolve().parent / "profile_hook")
        extra["PYTHONPATH"] = os.pathsep.join(p for p in (hook, os.environ.get("PYTHONPATH")) if p)
        extra["REELAY_BENCH_PROFILE_DIR"] = str(workdir / "profile")
    if args.webhooks:
        extra.pop("SANDBOX_WEBHOOK_URL")  # the stack's default: ingest's webhook route
    consumers = ["uploader", "status-poller"]
    try:
        with (
            state_server(args.store) as mongo,
            video_server(workdir / "videos") as media,
            running_stack(
                kafka_bootstrap_servers=kafka, mongodb_uri=mongo, workdir=workdir / "stack", extra_env=extra
            ) as stack,
        ):
            for i in range(2, args.uploader_replicas + 1):
                start_uploader_replica(stack, i)
                consumers.append(f"uploader-{i}")
            account_ids = asyncio.run(connect_accounts(stack, accounts))
            wait_ready(stack, consumers)
            print(f"pipeline: {uploads} uploads over {accounts} accounts; {bound.formula()}", file=sys.stderr)
            clock = time.monotonic()
            run = asyncio.run(submit(stack, account_ids, uploads, f"{media}/video.mp4", args.concurrency))
            print(
                f"pipeline: {len(run['accepted'])} accepted in {time.monotonic() - clock:.1f} s, "
                f"errors {run['errors']}",
                file=sys.stderr,
                flush=True,
            )
            left = timeout - (time.time() - run["first"])
            done = asyncio.run(wait_terminal(mongo, stack.database, len(run["accepted"]), left))
            docs = asyncio.run(read_uploads(mongo, stack.database))
            publishes = httpx.get(f"{stack.sandbox_url}/sandbox/publishes", timeout=30).json()["publishes"]
            stats = httpx.get(f"{stack.sandbox_url}/sandbox/stats", timeout=30).json()
            metrics = scrape(stack, consumers)
            cpu = service_cpu(stack)
            time.sleep(1.5 if args.profile else 0)  # the hook's last write
            profile = mongo_profile(workdir / "profile", stack) if args.profile else {}
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for svc in stack.services.values():
                    if svc.log_path.exists():
                        shutil.copy(svc.log_path, args.keep_logs / svc.log_path.name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result = analyse(run, docs, publishes, bound)
    waits: dict[str, float] = defaultdict(float)
    for name, text in metrics.items():
        for labels, value in metric_sums(text, "reelay_rate_limit_wait_seconds_total").items():
            waits[f"{name} {labels}"] += value
    polls = metric_sums(metrics.get("status-poller", ""), "reelay_poller_polls_total")
    ratio = result["wall"] / bound.seconds

    print(
        f"date: {started:%Y-%m-%d %H:%M} UTC; machine: {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, load {os.getloadavg()[0]:.1f})"
    )
    print(f"command: uv run python bench/pipeline.py {' '.join(sys.argv[1:])}".strip())
    print(
        f"setup: {uploads} uploads of {VIDEO_BYTES / 1e6:g} MB (URL, direct, SELF_ONLY) over {accounts} "
        f"accounts; {args.partitions} partitions; {args.uploader_replicas} uploader(s); max in flight per "
        f"partition {args.max_in_flight or 'default'}; state server {args.store}; webhooks "
        f"{'on' if args.webhooks else 'off'}; D = {args.processing_delay:g} s"
    )
    print(bound.formula())
    print()
    print(
        "| uploads / accounts | terminal | wall s | bound s | wall / bound | target "
        "| accounts starved (done > median account + 0.2 x bound) |"
    )
    print("|---|---|---|---|---|---|---|")
    verdict = "met" if ratio <= 1.2 and done >= uploads else "missed"
    print(
        f"| {uploads} / {accounts} | {done}/{uploads} | {result['wall']:.1f} | {bound.seconds:g} | "
        f"{ratio:.2f}x | <= 1.2x: {verdict} | {result['starved']} |"
    )
    print()
    print("| phase (s) | p50 | p99 | max |")
    print("|---|---|---|---|")
    print(f"| t0 -> last 202 | | | {result['submit_s']:.1f} |")
    for name, (p50, p99, top) in result["phases"].items():
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {top:.1f} |")
    for name, key in (
        ("t0 -> an account's first init", "first_init"),
        ("t0 -> an account's last init", "last_init"),
        ("t0 -> an account's last terminal", "account_done"),
    ):
        if result[key] is not None:
            low, mid, top = result[key]
            print(f"| {name} (min / p50 / max) | {mid:.1f} | min {low:.1f} | {top:.1f} |")
    print()
    print(f"states: {json.dumps(result['states'], sort_keys=True)}; TikTok inits: {result['inits']}")
    print(f"sandbox calls: {json.dumps(stats.get('calls', {}), sort_keys=True)}")
    print(f"sandbox violations: {json.dumps(stats.get('violations', {}), sort_keys=True)}")
    print(
        f"rate-limit waits (s, summed over tasks): {json.dumps({k: round(v, 1) for k, v in waits.items()})}"
    )
    print(f"poller polls: {json.dumps(polls)}")
    print(f"CPU seconds per service: {json.dumps({k: round(v, 1) for k, v in cpu.items()})}")
    for name, commands in sorted(profile.items()):
        total = sum(int(n) for n, _s in commands.values())
        seconds = sum(s for _n, s in commands.values())
        top = sorted(commands.items(), key=lambda kv: -kv[1][0])[:8]
        print(
            f"mongo {name}: {total} commands ({total / uploads:.1f} per upload), {seconds:.1f} s in all, "
            f"mean {1000 * seconds / max(total, 1):.1f} ms; "
            + ", ".join(f"{k} {int(n)} ({1000 * s / max(n, 1):.0f} ms)" for k, (n, s) in top)
        )
    if done < uploads:
        sys.exit(f"pipeline: only {done} of {uploads} uploads reached a terminal state in {timeout:g} s")


if __name__ == "__main__":
    main()
