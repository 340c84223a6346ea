"""The local stack's command line: `make up` / `down` / `status` / `demo`, and `make test`'s infra.

    python scripts/stack.py up [--no-demo]     start what is not running, wait until healthy, demo
                                               (KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI, S3_ENDPOINT_URL:
                                               use those servers, start no Kafka/FerretDB/SeaweedFS)
    python scripts/stack.py down               stop what `up` started (SIGTERM, then SIGKILL)
    python scripts/stack.py status             one line per process and per external server
    python scripts/stack.py demo               upload a sample video and follow it to `published`
    python scripts/stack.py test-infra up --dir D [--kafka] [--mongo] [--s3]
    python scripts/stack.py test-infra down --dir D

`down` and `status` need only the standard library, so they work before the venv exists.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from reelay_dev import config as c
from reelay_dev.orchestrate import (
    StackError,
    all_stages,
    bring_down,
    bring_up,
    check_externals,
    env_flag,
    exports_for_tests,
    externals_file,
    record_externals,
    say_stderr,
    status_lines,
    summary_block,
    wipe_test_infra,
)
from reelay_dev.procs import SystemProcessTable

ROOT = Path(__file__).resolve().parent.parent


def _config() -> c.StackConfig:
    return c.StackConfig.from_env(ROOT, os.environ, python=sys.executable)


async def _dev_key(cfg: c.StackConfig) -> str:
    """The dev tenant's key (made on the first run, kept in .run for the next)."""
    import httpx
    from reelay_dev.dev_tenant import DevTenantError, ensure_dev_key

    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
            return await ensure_dev_key(cfg, os.environ, http, say_stderr)
    except (DevTenantError, httpx.HTTPError) as exc:
        raise StackError(f"dev tenant: {exc}") from exc


async def _demo(cfg: c.StackConfig, api_key: str) -> str | None:
    from reelay_dev.demo import DemoError, run_demo

    try:
        timeout = float(os.environ.get("DEMO_TIMEOUT_SECONDS") or 180)
        size = int(os.environ.get("DEMO_VIDEO_BYTES") or 8_000_000)
    except ValueError as exc:
        raise StackError(f"DEMO_TIMEOUT_SECONDS / DEMO_VIDEO_BYTES must be numbers: {exc}") from exc
    try:
        return await run_demo(
            cfg, os.environ, say_stderr, api_key=api_key, video_size=size, wait_seconds=timeout
        )
    except DemoError as exc:
        raise StackError(f"demo failed: {exc}") from exc


async def cmd_up(args: argparse.Namespace) -> int:
    cfg = _config()
    table = SystemProcessTable()
    found = c.externals(cfg)
    kafka, mongo = cfg.kafka_bootstrap_servers, c.redact(cfg.mongodb_uri)
    kafka += " (external)" if not cfg.runs_kafka else ""
    mongo += " (external)" if not cfg.runs_ferretdb else ""
    say_stderr(f"up: Kafka {kafka}, Mongo {mongo}, TikTok API {cfg.tiktok_api_base_url}")
    blobs = cfg.s3_endpoint_url if cfg.blob_store == "s3" else cfg.data_dir / "blobs"
    say_stderr(f"up: blob store {cfg.blob_store} ({'MongoDB' if cfg.blob_store == 'gridfs' else blobs})")
    await check_externals(found, say_stderr)
    record_externals(cfg, found)
    await bring_up(cfg, c.stack_stages(cfg), table, say_stderr)
    tenant_key = await _dev_key(cfg)
    account_id = None
    if not args.no_demo and env_flag(os.environ, "DEMO", True):
        account_id = await _demo(cfg, tenant_key)
    print(summary_block(cfg, account_id, tenant_key=tenant_key), flush=True)
    return 0


async def cmd_demo(_: argparse.Namespace) -> int:
    cfg = _config()
    tenant_key = await _dev_key(cfg)
    account_id = await _demo(cfg, tenant_key)
    print(summary_block(cfg, account_id, tenant_key=tenant_key), flush=True)
    return 0


async def cmd_down(_: argparse.Namespace) -> int:
    cfg = _config()
    say_stderr("down: stopping the stack")
    ok = bring_down(cfg, all_stages(cfg), SystemProcessTable(), say_stderr)
    if ok:
        externals_file(cfg).unlink(missing_ok=True)  # external servers are left alone, and forgotten
    return 0 if ok else 1


async def cmd_status(_: argparse.Namespace) -> int:
    cfg = _config()
    for line in await status_lines(cfg, SystemProcessTable()):
        print(line)
    return 0


async def cmd_test_infra(args: argparse.Namespace) -> int:
    base: Path = args.dir
    cfg = c.StackConfig.for_tests(ROOT, base, os.environ, python=sys.executable)
    table = SystemProcessTable()
    if args.action == "down":
        every = c.infra_specs_for_tests(cfg, kafka=True, mongo=True, s3=True)
        ok = bring_down(cfg, [every], table, say_stderr)
        return 0 if ok else 1
    chosen = args.kafka or args.mongo or args.s3
    kafka, mongo, s3 = (args.kafka, args.mongo, args.s3) if chosen else (True, True, False)
    wipe_test_infra(cfg, table, say_stderr)
    names = [name for name, wanted in (("Kafka", kafka), ("FerretDB", mongo), ("SeaweedFS", s3)) if wanted]
    say_stderr(f"test-infra: starting {' '.join(names)} in {base}")
    await bring_up(cfg, [c.infra_specs_for_tests(cfg, kafka=kafka, mongo=mongo, s3=s3)], table, say_stderr)
    print(exports_for_tests(cfg, kafka=kafka, mongo=mongo, s3=s3), flush=True)
    return 0


def _abs_path(raw: str) -> Path:
    return Path(raw).resolve()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stack.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack and run the demo")
    up.add_argument("--no-demo", action="store_true", help="skip the demo upload (also: DEMO=0)")
    up.set_defaults(run=cmd_up)
    sub.add_parser("down", help="stop the stack").set_defaults(run=cmd_down)
    sub.add_parser("status", help="show what runs").set_defaults(run=cmd_status)
    sub.add_parser("demo", help="upload a sample video and follow it").set_defaults(run=cmd_demo)
    ti = sub.add_parser("test-infra", help="Kafka + FerretDB (+ SeaweedFS) for make test")
    ti.add_argument("action", choices=["up", "down"])
    ti.add_argument("--dir", required=True, type=_abs_path, help="data and run dir (wiped by `up`)")
    ti.add_argument("--kafka", action="store_true", help="start Kafka (default: both)")
    ti.add_argument("--mongo", action="store_true", help="start FerretDB (default: both)")
    ti.add_argument("--s3", action="store_true", help="start SeaweedFS's S3 gateway (not in the default)")
    ti.set_defaults(run=cmd_test_infra)
    return p


def main() -> int:
    args = parser().parse_args()
    try:
        return int(asyncio.run(args.run(args)))
    except (StackError, c.ConfigError) as exc:
        say_stderr(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        say_stderr("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
