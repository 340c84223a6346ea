"""Benchmark: ingest's JSON accept under fixed offered loads, against a bare Kafka producer.

The real ingest service (uvicorn, in-process here) with the TikTok sandbox, on the Mongo-wire
server of MONGODB_URI (a fresh database) and the Kafka of KAFKA_BOOTSTRAP_SERVERS (fresh topics),
and one connected account. For each offered load (requests a second), a load generator in another
process (a child Python process, httpx) sends `POST /v1/uploads` (a `video_url`, mode inbox) on a
fixed schedule for `--duration` seconds, open-loop: request i leaves at t0 + i/rate whether or not
the earlier ones were answered, and its latency is counted from that scheduled time (so a
generator or server that falls behind shows as latency, not as a lower offered load).

The baseline, in the same run: a bare aiokafka producer (acks=all, idempotent, as ingest's
publisher) in a child process sends the same number of same-size messages (an UploadRequested
of the same body) on the same schedule to the same Kafka topic, each awaited until acknowledged;
then once more with no schedule at all (every message sent at once) for its ceiling.

    set -a; . infra.env; set +a; uv run python bench/ingest_load.py            # 50, 200, 500 req/s, 10 s each
    set -a; . infra.env; set +a; uv run python bench/ingest_load.py --quick    # the same, 3 s each

Targets: ingest's rate at saturation >= 0.5x the bare producer's; p99 at 200 req/s <= 50 ms.
Every child is bounded by a timeout, so the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from history_growth import (
    connect_account,
    pct,
    running_ingest,
)  # bench/ is the script's directory: siblings import plainly
from pymongo import monitoring
from reelay_common.domain.messages import UploadRequested
from reelay_common.logging import configure_logging
from state_store import ferretdb
from tiktok_sandbox.testing import running_sandbox

API_KEY = "bench-key"
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 512


def body_of(account_id: str, run_id: str, i: int) -> dict[str, Any]:
    """The JSON body of request i (a unique request_id, so every request is a new upload)."""
    return {
        "request_id": f"load-{run_id}-{i:07d}",
        "account_id": account_id,
        "mode": "inbox",
        "video_url": f"http://127.0.0.1:9/load-{i:07d}.mp4",
    }


def message_of(account_id: str, run_id: str, i: int) -> bytes:
    """The UploadRequested ingest would publish for request i, as JSON (the baseline's payload)."""
    body = body_of(account_id, run_id, i)
    cmd = UploadRequested.model_validate({**body, "source": {"kind": "url", "url": body.pop("video_url")}})
    return cmd.model_dump_json().encode()


# -- the load generator (runs in the child process) ----------------------------------------------


async def open_loop(rate: float, count: int, fire: Any) -> dict[str, Any]:
    """Call `fire(i)` on the schedule t0 + i/rate (all at once when rate is 0); latency from the
    scheduled time. Returns the raw figures."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lags: list[float] = []

    async def one(i: int, due: float) -> None:
        try:
            outcome = await asyncio.wait_for(fire(i), REQUEST_TIMEOUT)
        except Exception as exc:  # a timeout or a refused connection is an error of this request
            outcome = type(exc).__name__
        done = time.perf_counter()
        if outcome is None:
            latencies.append(done - due)
        else:
            errors[outcome] = errors.get(outcome, 0) + 1

    tasks = []
    t0 = time.perf_counter() + 0.05
    for i in range(count):
        due = t0 + (i / rate if rate else 0.0)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(time.perf_counter() - due)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "sent": count,
        "ok": len(latencies),
        "errors": errors,
        "elapsed_s": elapsed,
        "achieved_rps": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": max(latencies) * 1000 if latencies else float("nan"),
        "send_lag_p99_ms": pct(lags, 0.99),
        "generator_cpu_s": usage.ru_utime + usage.ru_stime,
    }


async def child_http(args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT
    ) as http:
        await http.get("/healthz")  # one warm connection before the clock starts

        async def fire(i: int) -> str | None:
            resp = await http.post("/v1/uploads", json=body_of(args.account, args.run_id, i))
            return None if resp.status_code == 202 else f"http_{resp.status_code}"

        return await open_loop(args.rate, args.count, fire)


async def child_kafka(args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        client_id="bench-bare-producer",
        acks="all",
        enable_idempotence=True,
    )
    await producer.start()
    try:
        values = [message_of(args.account, args.run_id, i) for i in range(args.count)]

        async def fire(i: int) -> str | None:
            key = f"load-{args.run_id}-{i:07d}".encode()
            await asyncio.wait_for(
                producer.send_and_wait(args.topic, value=values[i], key=key), REQUEST_TIMEOUT
            )
            return None

        await producer.send_and_wait(args.topic, value=values[0], key=b"warm-up")
        result = await open_loop(args.rate, args.count, fire)
        result["message_bytes"] = len(values[0])
        return result
    finally:
        await producer.stop()


def child_main(args: argparse.Namespace) -> None:
    result = asyncio.run(child_http(args) if args.target == "ingest" else child_kafka(args))
    print(json.dumps(result))


# -- the parent: ingest in-process, a child generator per load ----------------------------------


class MongoTally(monitoring.CommandListener):
    """Counts the Mongo commands of every client made after it is registered (ingest's), and
    their time: where an accept's time goes."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def reset(self) -> None:
        self.count, self.seconds = {}, {}

    def _done(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent) -> None:
        name = event.command_name
        self.count[name] = self.count.get(name, 0) + 1
        self.seconds[name] = self.seconds.get(name, 0.0) + event.duration_micros / 1e6

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event)


TALLY = MongoTally()


async def generate(target: str, rate: float, count: int, run_id: str, **extra: str) -> dict[str, Any]:
    """Run one load in a child process; its figures, plus this process's CPU meanwhile (ingest's)."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        target,
        "--rate",
        str(rate),
        "--count",
        str(count),
        "--run-id",
        run_id,
    ]
    for k, v in extra.items():
        cmd += [f"--{k}", v]
    cpu0 = time.process_time()
    TALLY.reset()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=count / max(rate, 1) + REQUEST_TIMEOUT + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"the {target} generator exited {proc.returncode}")
    result: dict[str, Any] = json.loads(out)
    result["server_cpu_s"] = time.process_time() - cpu0
    result["mongo"] = {k: (TALLY.count[k], TALLY.seconds[k]) for k in sorted(TALLY.count)}
    return result


async def measure(uri: str, bootstrap: str, loads: list[float], duration: float) -> list[dict[str, Any]]:
    suffix = uuid.uuid4().hex[:8]
    rows: list[dict[str, Any]] = []
    async with (
        running_sandbox() as sandbox,
        running_ingest(uri, bootstrap, sandbox, f"bench_load_{suffix}", "bench.load") as (settings, port),
    ):
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            account = await connect_account(http, sandbox)
            for i in range(20):  # warm the path (connections, caches) outside the figures
                resp = await http.post("/v1/uploads", json=body_of(account, f"warm{suffix}", i))
                assert resp.status_code == 202, resp.text
        topic = settings.topic_upload_requested
        plan: list[tuple[str, float]] = [(t, r) for r in loads for t in ("ingest", "kafka")]
        plan.append(("kafka", 0.0))  # the producer's ceiling: every message at once
        for target, rate in plan:
            count = round(max(loads) * duration) if rate == 0 else round(rate * duration)
            run_id = f"{target}{rate:g}-{suffix}"
            extra = {"url": url} if target == "ingest" else {"bootstrap": bootstrap, "topic": topic}
            row = await generate(target, rate, count, run_id, account=account, **extra)
            row.update(target=target, offered=rate)
            rows.append(row)
            print(
                f"  {target:<6} offered {rate or float('inf'):>6g}/s:"
                f" achieved {row['achieved_rps']:7.1f}/s"
                f"  p50 {row['p50_ms']:8.1f} ms  p99 {row['p99_ms']:8.1f} ms"
                f"  errors {sum(row['errors'].values())}  lag p99 {row['send_lag_p99_ms']:.1f} ms"
                f"  server cpu {row['server_cpu_s']:.1f} s  generator cpu {row['generator_cpu_s']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            if target == "ingest" and row["ok"]:
                per = ", ".join(
                    f"{k} {n / row['sent']:.1f} x {t / n * 1000:.1f} ms" for k, (n, t) in row["mongo"].items()
                )
                print(f"    Mongo commands per request: {per}", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict[str, Any]], duration: float) -> None:
    print("\n| target | offered | sent | achieved | p50 | p99 | errors | ingest CPU (cores) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        offered = f"{r['offered']:g} req/s" if r["offered"] else "all at once"
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        cores = f"{r['server_cpu_s'] / r['elapsed_s']:.2f}" if r["target"] == "ingest" else "-"
        name = "ingest POST /v1/uploads" if r["target"] == "ingest" else "bare aiokafka producer"
        print(
            f"| {name} | {offered} | {r['sent']} | {r['achieved_rps']:.1f}/s | {r['p50_ms']:.1f} ms |"
            f" {r['p99_ms']:.1f} ms | {errors} | {cores} |"
        )
    ingest = [r for r in rows if r["target"] == "ingest"]
    kafka = [r for r in rows if r["target"] == "kafka"]
    best_ingest = max(r["achieved_rps"] for r in ingest)
    best_kafka = max(r["achieved_rps"] for r in kafka)
    at_max = {r["offered"]: r["achieved_rps"] for r in kafka}
    top = max(r["offered"] for r in ingest)
    top_ingest = next(r["achieved_rps"] for r in ingest if r["offered"] == top)
    print(f"\nmessage size {kafka[0].get('message_bytes')} bytes; {duration:g} s per load")
    print(
        f"ingest at saturation {best_ingest:.1f}/s / bare producer ceiling {best_kafka:.1f}/s = "
        f"{best_ingest / best_kafka:.2f}x (target >= 0.5x); at the same offered {top:g}/s: "
        f"{top_ingest:.1f}/s / {at_max[top]:.1f}/s = {top_ingest / at_max[top]:.2f}x"
    )
    p99 = {r["offered"]: r["p99_ms"] for r in ingest}
    if 200 in p99:
        print(f"ingest p99 at 200 req/s: {p99[200]:.1f} ms of the answered (target <= 50 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loads", nargs="+", type=float, default=[50, 200, 500], help="req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load")
    parser.add_argument("--quick", action="store_true", help="3 s per load")
    parser.add_argument(
        "--store",
        choices=["env", "ferretdb-sqlite", "ferretdb-postgresql"],
        default="env",
        help="the state server: MONGODB_URI's (default) or a private FerretDB started here",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    # The child (load generator) side.
    parser.add_argument("--child", choices=["ingest", "kafka"], dest="target", help=argparse.SUPPRESS)
    for name in ("rate", "count", "run-id", "url", "account", "bootstrap", "topic"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.target:
        args.rate, args.count = float(args.rate), int(args.count)
        child_main(args)
        return
    if args.quick:
        args.duration = 3.0
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise SystemExit("set KAFKA_BOOTSTRAP_SERVERS to a running Kafka (make test starts one)")
    monitoring.register(TALLY)
    # Ingest logs two info lines per accepted request: on 2 shared cores part of the cost, so it is
    # a flag (default: warnings only, which also keeps the table legible).
    configure_logging(args.log_level)
    with state_server(args.store) as uri:
        print(
            f"ingest under load: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, Kafka {bootstrap},"
            f" state server {args.store} ({uri})",
            flush=True,
        )
        rows = asyncio.run(measure(uri, bootstrap, args.loads, args.duration))
    report(rows, args.duration)


@contextlib.contextmanager
def state_server(store: str) -> Iterator[str]:
    """MONGODB_URI's server (`env`), or a private FerretDB started here (stopped at exit)."""
    if store == "env":
        uri = os.environ.get("MONGODB_URI")
        if not uri:
            raise SystemExit("set MONGODB_URI to a running server, or pass --store ferretdb-postgresql")
        yield uri
        return
    with (
        tempfile.TemporaryDirectory(prefix="reelay-load-") as tmp,
        ferretdb(store.removeprefix("ferretdb-"), Path(tmp)) as uri,
    ):
        yield uri


if __name__ == "__main__":
    main()
