"""Benchmark: a big file streamed in through ingest reaches `uploaded` with flat memory.

The whole stack runs as real processes (tests/e2e/stack.py: the TikTok sandbox, ingest, the
uploader, the status-poller) over the real Kafka and Mongo-wire server of KAFKA_BOOTSTRAP_SERVERS
and MONGODB_URI, with the default stack's blob store (`local`, in a temp directory). For each
size, ingest and the uploader are restarted (a fresh peak), a file is POSTed to /v1/uploads as a
multipart stream, and the run waits for the upload's state to be `uploaded`. Then each process's
peak RSS (VmHWM in /proc/<pid>/status) is read while it still runs. The sizes run from small to
big; the figure is each peak against the smallest run's (target: flat, <= 1.2x).

    KAFKA_BOOTSTRAP_SERVERS=... MONGODB_URI=... uv run python bench/ingest_flow.py            # 10 MB, 2 GB
    KAFKA_BOOTSTRAP_SERVERS=... MONGODB_URI=... uv run python bench/ingest_flow.py --quick    # 10 MB, 200 MB

Each upload is bounded by `--timeout` seconds, so the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tiktok_sandbox.media import write_sample_mp4
from upload_speed import peak_rss_mb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.e2e
from tests.e2e.flows import connect_account
from tests.e2e.stack import Stack, running_stack, wait_for_upload_state

MB = 1000 * 1000
MEASURED = ("ingest", "uploader")


def pid_of(stack: Stack, name: str) -> int:
    process = stack.services[name].process
    assert process is not None, f"{name} was not started"
    assert process.poll() is None, f"{name} is not running"
    return process.pid


async def one_upload(stack: Stack, path: Path, limit: float) -> dict[str, Any]:
    """POST `path` through ingest (streamed), wait for `uploaded`; times and peak RSS."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(limit)) as http:
        account_id, _open_id = await connect_account(http, stack)
        started = time.perf_counter()
        with path.open("rb") as f:  # httpx streams a file object: the bench holds no copy either
            resp = await http.post(
                f"{stack.ingest_url}/v1/uploads",
                headers=stack.headers,
                data={"account_id": account_id, "mode": "inbox"},
                files={"file": (path.name, f, "video/mp4")},
            )
        assert resp.status_code == 202, resp.text
        accepted = time.perf_counter() - started
        final = await wait_for_upload_state(
            http,
            f"{stack.ingest_url}/v1/uploads/{resp.json()['request_id']}",
            until={"uploaded", "inbox_delivered", "processing", "failed"},
            timeout=limit,
            headers=stack.headers,
        )
        total = time.perf_counter() - started
    assert final["state"] != "failed", final
    return {
        "accepted_s": accepted,
        "uploaded_s": total,
        "state": final["state"],
        **{f"{name}_rss_mb": peak_rss_mb(pid_of(stack, name)) for name in MEASURED},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 MB and 200 MB")
    parser.add_argument("--sizes-mb", type=int, nargs="+", help="override the sizes (MB of 10^6 bytes)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one upload may take")
    args = parser.parse_args()
    sizes = args.sizes_mb or ([10, 200] if args.quick else [10, 2000])
    kafka, mongo = os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["MONGODB_URI"]
    workdir = Path(tempfile.mkdtemp(prefix="reelay-bench-flow-"))
    started = datetime.now(UTC)
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        extra = {"REELAY_BLOB_STORE": "local", "REELAY_BLOB_DIR": str(workdir / "blobs")}
        with running_stack(
            kafka_bootstrap_servers=kafka, mongodb_uri=mongo, workdir=workdir / "stack", extra_env=extra
        ) as stack:
            for size_mb in sizes:
                path = workdir / f"video-{size_mb}.mp4"
                write_sample_mp4(path, size_mb * MB)
                for name in MEASURED:  # a fresh process: its peak is this upload's
                    stack.kill(name, signal.SIGTERM)  # a clean leave: no wait for a rebalance
                    stack.start(name)
                rows.append((size_mb, asyncio.run(one_upload(stack, path, args.timeout))))
                print(size_mb, rows[-1][1], file=sys.stderr, flush=True)
                path.unlink()
                for part in (workdir / "stack" / "sandbox-data").glob("*"):  # 2 GB each
                    if part.is_file():
                        part.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"date: {started:%Y-%m-%d %H:%M} UTC; machine: {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, load {os.getloadavg()[0]:.1f})"
    )
    print(f"command: uv run python bench/ingest_flow.py {' '.join(sys.argv[1:])}".strip())
    print()
    print(
        "| video | POST → 202 s | POST → uploaded s | state seen | ingest peak RSS | uploader peak RSS "
        "| ingest vs smallest | uploader vs smallest |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0][1]
    for size_mb, r in rows:
        print(
            f"| {size_mb} MB | {r['accepted_s']:.1f} | {r['uploaded_s']:.1f} | {r['state']} "
            f"| {r['ingest_rss_mb']:.0f} MB | {r['uploader_rss_mb']:.0f} MB "
            f"| {r['ingest_rss_mb'] / base['ingest_rss_mb']:.2f}x "
            f"| {r['uploader_rss_mb'] / base['uploader_rss_mb']:.2f}x |"
        )


if __name__ == "__main__":
    main()
