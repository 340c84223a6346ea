"""Benchmark: how the cost of one state read and one guarded transition grows with stored history.

For each candidate MongoDB-wire server it fills one collection with upload-shaped documents (a
unique `_id` and one secondary index, as `uploads` has) up to each history size, then measures side
by side in one run: insert rate, find by `_id`, and a guarded `find_one_and_update` by `_id`. The
same operations on a small collection of in-flight work (a fixed 200 documents) are the baseline:
that is what a hot path costs when it reads only the work in flight. Ratios, not absolute times,
are the result (the machine is shared).

Candidates it can start itself (in a temp dir, on free ports, stopped at exit):
  ferretdb-sqlite      FerretDB v1.24.2 on SQLite (what `make up` runs)
  ferretdb-postgresql  FerretDB v1.24.2 on PostgreSQL 15 (Debian's `postgresql` package)
or any running server given as NAME=URI.

    uv run python bench/state_store.py --start ferretdb-sqlite ferretdb-postgresql --sizes 1000 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument

ROOT = Path(__file__).resolve().parents[1]
FERRETDB = ROOT / ".cache/ferretdb/v1.24.2/bin/ferretdb"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SMALL = 200  # documents in the in-flight baseline collection
SAMPLES = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def ferretdb(handler: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    args = [str(FERRETDB), f"--listen-addr=127.0.0.1:{port}", "--telemetry=disable", "--log-level=warn"]
    args += ["--debug-addr=-", f"--state-dir={workdir}"]
    if handler == "sqlite":
        data = workdir / "sqlite"
        data.mkdir()
        args += ["--handler=sqlite", f"--sqlite-url=file:{data}/"]
    else:
        pg_port = free_port()
        pgdata = workdir / "pg"
        pgdata.mkdir()
        shutil.chown(workdir, "postgres")
        shutil.chown(pgdata, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_pg, str(PG_BIN / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *as_pg,
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(pgdata),
                "-o",
                f"-p {pg_port} -k {pgdata} -c listen_addresses=127.0.0.1",
                "-l",
                str(pgdata / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*as_pg, str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "bench"],
            check=True,
            capture_output=True,
        )
        args += ["--handler=postgresql", f"--postgresql-url=postgres://postgres@127.0.0.1:{pg_port}/bench"]
    procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait_port(port)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)
        if handler == "postgresql":
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(workdir / "pg"),
                    "-m",
                    "fast",
                    "stop",
                ],
                check=False,
                capture_output=True,
            )


def upload_doc(i: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "_id": f"req-{i:08d}-{uuid.uuid4().hex[:8]}",
        "account_id": f"acct-{i % 100}",
        "state": "published",
        "mode": "direct",
        "source": {"kind": "url", "url": f"https://videos.example.com/{i}.mp4"},
        "history": [
            {"state": s, "at": now, "source": "uploader", "detail": {}}
            for s in ("accepted", "uploading", "uploaded", "processing", "published")
        ],
        "created_at": now,
        "updated_at": now,
        "publish_id": f"v_pub_{i}",
        "post_ids": [str(10**18 + i)],
    }


async def fill(coll: Any, start: int, stop: int) -> float:
    """Insert documents [start, stop) in batches; return inserts per second."""
    t0 = time.perf_counter()
    batch = 500
    for lo in range(start, stop, batch):
        await coll.insert_many([upload_doc(i) for i in range(lo, min(stop, lo + batch))], ordered=False)
    return (stop - start) / max(time.perf_counter() - t0, 1e-9)


async def probe(coll: Any, ids: list[str]) -> tuple[float, float, float, float]:
    """Median ms of find by _id, a guarded findAndModify, an update_one by _id alone; inserts/s."""
    finds, updates, plain = [], [], []
    for rid in ids[:SAMPLES]:
        t0 = time.perf_counter()
        await coll.find_one({"_id": rid})
        finds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await coll.find_one_and_update(
            {"_id": rid, "state": {"$in": ["published", "processing"]}},
            {"$set": {"state": "processing", "updated_at": datetime.now(UTC)}},
            return_document=ReturnDocument.AFTER,
        )
        updates.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await coll.update_one({"_id": rid}, {"$set": {"updated_at": datetime.now(UTC)}})
        plain.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    n = 50
    for i in range(n):
        await coll.insert_one(upload_doc(10**7 + i))
    rate = n / (time.perf_counter() - t0)
    med = statistics.median
    return med(finds) * 1000, med(updates) * 1000, med(plain) * 1000, rate


async def measure(name: str, uri: str, sizes: list[int]) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=10_000)
    db = client[f"bench_{uuid.uuid4().hex[:8]}"]
    rows = []
    try:
        small = db["inflight"]
        await small.create_index([("state", ASCENDING)])
        await fill(small, 0, SMALL)
        small_ids = [d["_id"] async for d in small.find({}, {"_id": 1})]
        history = db["uploads"]
        await history.create_index([("state", ASCENDING)])
        have = 0
        for size in sorted(sizes):
            rate = await fill(history, have, size)
            have = size
            ids = [d["_id"] async for d in history.find({}, {"_id": 1}).limit(SAMPLES * 20)]
            ids = ids[:: max(1, len(ids) // SAMPLES)]
            find_ms, upd_ms, plain_ms, ins_rate = await probe(history, ids)
            s_find, s_upd, _, s_ins = await probe(small, small_ids)
            rows.append(
                {
                    "server": name,
                    "stored": size,
                    "bulk_insert_per_s": rate,
                    "insert_per_s": ins_rate,
                    "find_ms": find_ms,
                    "update_ms": upd_ms,
                    "plain_update_ms": plain_ms,
                    "inflight_find_ms": s_find,
                    "inflight_update_ms": s_upd,
                    "inflight_insert_per_s": s_ins,
                }
            )
            print(
                f"  {name} {size:>7}: find {find_ms:7.2f} ms  update {upd_ms:7.2f} ms"
                f"  by-id {plain_ms:7.2f} ms  insert {ins_rate:6.0f}/s"
                f" | in-flight({SMALL}) find {s_find:5.2f} ms update {s_upd:5.2f} ms",
                flush=True,
            )
            await small.delete_many({"_id": {"$regex": "^req-1000"}})
    finally:
        await client.drop_database(db.name)
        await client.close()
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| server | stored uploads | find by _id | guarded findAndModify | update_one by _id"
        " | single insert | in-flight find | in-flight update |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['server']} | {r['stored']:,} | {r['find_ms']:.2f} ms | {r['update_ms']:.2f} ms |"
            f" {r['plain_update_ms']:.2f} ms |"
            f" {r['insert_per_s']:.0f}/s | {r['inflight_find_ms']:.2f} ms |"
            f" {r['inflight_update_ms']:.2f} ms |"
        )
    by_server: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_server.setdefault(r["server"], []).append(r)
    print(
        "\n| server | growth of find (largest / smallest history) | growth of update"
        " | growth of in-flight update |"
    )
    print("|---|---|---|---|")
    for name, rs in by_server.items():
        lo, hi = rs[0], rs[-1]
        print(
            f"| {name} | {hi['find_ms'] / lo['find_ms']:.1f}x | {hi['update_ms'] / lo['update_ms']:.1f}x |"
            f" {hi['inflight_update_ms'] / lo['inflight_update_ms']:.1f}x |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--start", nargs="*", default=["ferretdb-sqlite"], choices=["ferretdb-sqlite", "ferretdb-postgresql"]
    )
    parser.add_argument("--uri", nargs="*", default=[], help="NAME=URI of a running server")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 100_000])
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for item in args.uri:
        name, _, uri = item.partition("=")
        rows += await measure(name, uri, args.sizes)
    for cand in args.start:
        with tempfile.TemporaryDirectory(prefix="reelay-bench-") as tmp:
            os.chmod(tmp, 0o755)
            with ferretdb(cand.removeprefix("ferretdb-"), Path(tmp)) as uri:
                rows += await measure(cand, uri, args.sizes)
    report(rows)


if __name__ == "__main__":
    asyncio.run(main())
