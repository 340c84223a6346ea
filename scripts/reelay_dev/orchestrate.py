"""`make up`, `make down`, `make status` and the test infrastructure of `make test`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import config as c
from .config import DEV_TENANT, ProcessSpec, StackConfig
from .procs import (
    ProcessTable,
    StartError,
    is_ours,
    log_tail,
    read_pid,
    remove_pid,
    running_pid,
    signal_process,
    start,
    stop_all,
)

Say = Callable[[str], None]


def say_stderr(line: str) -> None:
    """Progress goes to stderr, so stdout stays clean for what scripts read."""
    print(line, file=sys.stderr, flush=True)


class StackError(RuntimeError):
    """The stack could not be brought up (the message says what to do)."""


@dataclass
class Launched:
    """A process of the current stage: started now (`proc`) or found running (`pid`)."""

    spec: ProcessSpec
    pid: int
    proc: subprocess.Popen[bytes] | None


def check_installed(cfg: StackConfig, specs: Sequence[ProcessSpec]) -> None:
    """Fail early, and clearly, when an install step has not run."""
    names = {s.name for s in specs}
    if c.KAFKA in names:
        if not any(cfg.kafka_libs.glob("kafka_2.13-*.jar")):
            raise StackError(
                f"Kafka is not installed in {cfg.kafka_libs}: run scripts/infra/install-kafka.sh"
            )
        if shutil.which(cfg.java) is None:
            raise StackError(f"{cfg.java!r} is not on PATH: Kafka needs Java 17+ (set JAVA=/path/to/java)")
    if c.FERRETDB in names and not cfg.ferretdb_bin.exists():
        raise StackError(
            f"FerretDB is not built at {cfg.ferretdb_bin}: run scripts/infra/install-ferretdb.sh"
        )
    if c.SEAWEEDFS in names and not cfg.seaweedfs_bin.exists():
        raise StackError(
            f"SeaweedFS is not built at {cfg.seaweedfs_bin}: run scripts/infra/install-seaweedfs.sh"
        )


def find_running(cfg: StackConfig, spec: ProcessSpec, table: ProcessTable, say: Say) -> int | None:
    """Our running pid of `spec`, or None; a stale pid file (pid gone or reused) is removed."""
    pid = running_pid(cfg, spec, table)
    if pid is not None:
        return pid
    stale = read_pid(cfg.pid_file(spec.name))
    if stale is not None:
        say(f"  {spec.name:<14} not running (stale pid file named pid {stale})")
        remove_pid(cfg.pid_file(spec.name))
    return None


def check_ports_free(cfg: StackConfig, specs: Sequence[ProcessSpec]) -> None:
    """Refuse to start anything when a port we need is held by a process that is not ours."""
    from .health import port_open

    taken = [(spec.name, port) for spec in specs for port in spec.ports if port_open(cfg.host, port)]
    if taken:
        listing = ", ".join(f"{name} needs {cfg.host}:{port}" for name, port in taken)
        raise StackError(
            f"{listing}, but another process (not started by this stack) listens there. "
            "Stop it, or move this stack's ports (KAFKA_PORT, FERRETDB_PORT, ... see `make help`)."
        )


def launch(cfg: StackConfig, spec: ProcessSpec) -> Launched:
    """Start `spec` (the caller checked it is not running and its ports are free)."""
    try:
        proc = start(cfg, spec)
    except StartError as exc:
        raise StackError(str(exc)) from exc
    return Launched(spec, proc.pid, proc)


async def wait_healthy(cfg: StackConfig, launched: Launched, table: ProcessTable, say: Say) -> None:
    """Poll the spec's health check until it passes, the process dies, or its timeout passes."""
    from .health import check

    spec = launched.spec
    began = time.monotonic()
    deadline = began + spec.health.timeout_seconds
    while True:
        if await check(spec.health):
            say(f"  {spec.name:<14} healthy ({time.monotonic() - began:.1f}s)")
            return
        # A process we spawned is gone only when it exited: right after the fork, before the exec,
        # /proc still shows our own command line and environment, which `is_ours` would refuse
        # (seen: SeaweedFS reported as "exited before it was healthy" while it went on to start).
        if launched.proc is not None:
            exited = launched.proc.poll()
            gone = exited is not None
        else:
            exited = None
            gone = not is_ours(table.info(launched.pid), marker=spec.marker, stack_id=cfg.stack_id)
        if gone:
            remove_pid(cfg.pid_file(spec.name))
            code = f" with code {exited}" if exited is not None else ""
            raise StackError(
                f"{spec.name} exited{code} before it was healthy. End of {cfg.log_file(spec.name)}:\n"
                f"{log_tail(cfg.log_file(spec.name))}"
            )
        if time.monotonic() >= deadline:
            raise StackError(
                f"{spec.name} (pid {launched.pid}) was not healthy after {spec.health.timeout_seconds:.0f}s "
                f"({spec.health.kind} check on {spec.health.target}). End of its log:\n"
                f"{log_tail(cfg.log_file(spec.name))}"
            )
        await asyncio.sleep(0.5)


async def bring_up(
    cfg: StackConfig, stages: Sequence[Sequence[ProcessSpec]], table: ProcessTable, say: Say
) -> None:
    """Start each stage's missing processes and wait for the whole stage to be healthy."""
    check_installed(cfg, [s for stage in stages for s in stage])
    for stage in stages:
        running = {spec.name: find_running(cfg, spec, table, say) for spec in stage}
        check_ports_free(cfg, [spec for spec in stage if running[spec.name] is None])
        launched = []
        for spec in stage:
            pid = running[spec.name]
            if pid is not None:
                say(f"  {spec.name:<14} already running (pid {pid})")
                launched.append(Launched(spec, pid, None))
            else:
                launched.append(launch(cfg, spec))
                say(f"  {spec.name:<14} started (pid {launched[-1].pid}), log {cfg.log_file(spec.name)}")
        results = await asyncio.gather(
            *(wait_healthy(cfg, item, table, say) for item in launched), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise StackError("\n\n".join(str(e) for e in errors))


def bring_down(
    cfg: StackConfig,
    stages: Sequence[Sequence[ProcessSpec]],
    table: ProcessTable,
    say: Say,
    *,
    send: Callable[[int, signal.Signals], None] = signal_process,
) -> bool:
    """Stop the stages in reverse order (services before the infrastructure they use)."""
    ok = True
    for stage in reversed(stages):
        for outcome in stop_all(cfg, stage, table, send=send):
            if outcome.result == "not running":
                continue
            pid = f" (pid {outcome.pid})" if outcome.pid is not None else ""
            say(f"  {outcome.name:<14} {outcome.result}{pid}")
            ok = ok and outcome.result in ("stopped", "killed", "stale pid file")
    return ok


def all_stages(cfg: StackConfig) -> list[list[ProcessSpec]]:
    """Every process `make up` may have started, whatever the environment says now.

    A Kafka, FerretDB, SeaweedFS or sandbox left by an earlier `make up` that started its own is
    ours to stop even when this environment names an external server instead. An external server
    never is: it has no pid file in this stack's run dir, and a pid is signalled only when the
    process carries this stack's marker and id (procs.is_ours).
    """
    first, services = c.stack_stages(cfg)
    started = {spec.name for spec in first}
    every = [c.kafka_spec(cfg), c.ferretdb_spec(cfg), c.seaweedfs_spec(cfg), c.sandbox_spec(cfg)]
    return [first + [spec for spec in every if spec.name not in started], services]


# What each process of the stack serves, as `externals` names the server used instead of it.
SERVES = {c.KAFKA: "kafka", c.FERRETDB: "mongodb", c.SEAWEEDFS: "s3"}


def externals_file(cfg: StackConfig) -> Path:
    """`.run/externals.json`: the servers the last `make up` used without starting them."""
    return cfg.run_dir / "externals.json"


def record_externals(cfg: StackConfig, found: list[c.External]) -> None:
    """Remember what `up` used (owner-only: a MONGODB_URI may carry a password)."""
    path = externals_file(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(c.externals_json(found))


def recorded_externals(cfg: StackConfig) -> list[c.External]:
    """What the last `up` recorded, or what this environment names when there is no record."""
    with contextlib.suppress(OSError):
        found = c.externals_from_json(externals_file(cfg).read_text(encoding="utf-8"))
        if found is not None:
            return found
    return c.externals(cfg)


async def check_externals(found: Sequence[c.External], say: Say) -> None:
    """Wait (bounded) until every external server answers; a clear error naming its variable if not."""
    from .health import check

    async def answers(ext: c.External) -> str | None:
        deadline = time.monotonic() + ext.health.timeout_seconds
        while not await check(ext.health):
            if time.monotonic() >= deadline:
                return (
                    f"{ext.env_var}={ext.shown} does not answer ({ext.health.kind} check, "
                    f"{ext.health.timeout_seconds:.0f}s): start it, or unset {ext.env_var} so that "
                    "`make up` starts its own"
                )
            await asyncio.sleep(0.5)
        say(f"  {ext.name:<14} external {ext.shown} ({ext.env_var}), answers")
        return None

    errors = [e for e in await asyncio.gather(*(answers(ext) for ext in found)) if e is not None]
    if errors:
        raise StackError("\n".join(errors))


async def status_lines(cfg: StackConfig, table: ProcessTable) -> list[str]:
    """One line per process: running or not, pid, healthy or not; one per external server used."""
    from .health import check

    found = recorded_externals(cfg)
    lines = []
    for ext in found:
        answers = await check(ext.health)
        lines.append(
            f"  {ext.name:<14} external {ext.shown} ({ext.env_var}, not started by this stack), "
            f"{'answers' if answers else 'NOT answering'}"
        )
    served = {ext.name for ext in found}
    for spec in [s for stage in all_stages(cfg) for s in stage]:
        pid = running_pid(cfg, spec, table)
        if pid is None:
            if SERVES.get(spec.name) not in served:
                lines.append(f"  {spec.name:<14} stopped")
            continue
        healthy = await check(spec.health)
        lines.append(f"  {spec.name:<14} running (pid {pid}), {'healthy' if healthy else 'NOT healthy'}")
    return lines


def summary_block(cfg: StackConfig, account_id: str | None, *, tenant_key: str | None = None) -> str:
    """The block `make up` ends with, for people and scripts: the default tenant's key, and the dev
    tenant's (`dev_tenant`) when one was made, which the demo's account belongs to."""
    lines = [f"Ingest:     {cfg.ingest_url}", f"API key:    {cfg.api_key}"]
    if tenant_key is not None:
        lines += [f"Tenant:     {DEV_TENANT}", f"Tenant key: {tenant_key}"]
    if account_id is not None:
        lines.append(f"Account id: {account_id}")
    return "\n".join(lines)


def exports_for_tests(cfg: StackConfig, *, kafka: bool, mongo: bool, s3: bool = False) -> str:
    """Shell `export` lines that point the tests at the test infrastructure."""
    lines = []
    if kafka:
        lines.append(f"export KAFKA_BOOTSTRAP_SERVERS={cfg.kafka_bootstrap_servers}")
    if mongo:
        lines.append(f"export MONGODB_URI={cfg.mongodb_uri}")
    if s3:
        lines += [
            f"export S3_ENDPOINT_URL={cfg.s3_endpoint_url}",
            f"export REELAY_S3_BUCKET={cfg.s3_bucket}",
            f"export REELAY_S3_ACCESS_KEY_ID={c.DEV_S3_ACCESS_KEY}",
            f"export REELAY_S3_SECRET_ACCESS_KEY={c.DEV_S3_SECRET_KEY}",
        ]
    return "\n".join(lines)


def wipe_test_infra(cfg: StackConfig, table: ProcessTable, say: Say) -> None:
    """Stop what an interrupted earlier run left, then delete its data (each run starts empty)."""
    specs = c.infra_specs_for_tests(cfg, kafka=True, mongo=True, s3=True)
    bring_down(cfg, [specs], table, say)
    for path in (cfg.data_dir, cfg.run_dir):
        shutil.rmtree(path, ignore_errors=True)


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no env var (1/true/yes/on vs 0/false/no/off)."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise c.ConfigError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")
