"""Runs the whole Reelay stack (sandbox, ingest, uploader, status-poller) as real processes.

Kafka, the Mongo-wire server and S3 come from the session fixtures (real ones, never fakes); each
stack gets its own topics, database and S3 prefix so stacks and tests never see each other's records.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from reelay_testing.waiting import eventually

# Where files streamed into ingest wait for the uploader (REELAY_BLOB_STORE); gridfs is the services'
# own default, and so the default of an e2e stack.
BLOB_STORES = ("local", "s3", "gridfs")
DEFAULT_BLOB_STORE = "gridfs"

API_KEY = "e2e-api-key"
CLIENT_KEY = "e2e-client-key"
CLIENT_SECRET = "e2e-client-secret"  # the sandbox's test secret, nothing real


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """One process of the stack."""

    name: str
    module: str
    health_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def tail(self, lines: int = 60) -> str:
        """The end of this service's log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Stack:
    """A running stack: where to reach it and how to stop or restart its parts."""

    ingest_url: str
    sandbox_url: str
    env: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    database: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def start(self, name: str) -> None:
        """Start (or restart) one service and wait until it answers /healthz."""
        svc = self.services[name]
        log = svc.log_path.open("ab")
        svc.process = subprocess.Popen(  # our own interpreter and module
            [sys.executable, "-m", svc.module],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if svc.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {svc.process.returncode}:\n{svc.tail()}")
            try:
                if httpx.get(svc.health_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not become healthy in 60 s:\n{svc.tail()}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one service (SIGKILL by default: no chance to clean up)."""
        proc = self.services[name].process
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=60)

    def stop_all(self) -> None:
        for name in reversed(list(self.services)):
            self.kill(name, signal.SIGTERM)

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{s.tail()}" for n, s in self.services.items())


def blob_store_env(
    store: str, *, workdir: Path, suffix: str, s3: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What ingest and the uploader are told about the blob store: `local`, a directory both see;
    `s3`, the session's S3 server (`s3`: the s3_settings fixture) under a prefix of this stack's own;
    `gridfs`, the stack's own database."""
    if store == "local":
        return {"REELAY_BLOB_STORE": "local", "REELAY_BLOB_DIR": str(workdir / "blobs")}
    if store == "s3":
        if s3 is None:
            raise ValueError("the s3 blob store needs the S3 server's settings (the s3_settings fixture)")
        keys = {
            "REELAY_S3_ACCESS_KEY_ID": s3["access_key_id"],
            "REELAY_S3_SECRET_ACCESS_KEY": s3["secret_access_key"],
        }
        return {
            "REELAY_BLOB_STORE": "s3",
            "S3_ENDPOINT_URL": s3["endpoint_url"],
            "REELAY_S3_BUCKET": s3["bucket"],
            "REELAY_S3_REGION": s3["region"],
            "REELAY_S3_PREFIX": f"e2e/{suffix}/",
            **({k: v for k, v in keys.items() if v}),
        }
    if store == "gridfs":
        return {"REELAY_BLOB_STORE": "gridfs"}
    raise ValueError(f"no such blob store: {store!r} (one of {', '.join(BLOB_STORES)})")


@contextmanager
def running_stack(
    *,
    kafka_bootstrap_servers: str,
    mongodb_uri: str,
    workdir: Path,
    blob_store: str = DEFAULT_BLOB_STORE,
    s3: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """Start sandbox, ingest, uploader and status-poller on `blob_store`; stop them all afterwards."""
    suffix = uuid.uuid4().hex[:10]
    ports = {n: free_port() for n in ("sandbox", "ingest", "uploader", "status-poller")}
    sandbox_url = f"http://127.0.0.1:{ports['sandbox']}"
    ingest_url = f"http://127.0.0.1:{ports['ingest']}"
    topics = {
        "REELAY_TOPIC_UPLOAD_REQUESTED": f"e2e.{suffix}.upload.requested",
        "REELAY_TOPIC_PUBLISH_EVENTS": f"e2e.{suffix}.publish.events",
        "REELAY_TOPIC_PUBLISH_STATUS": f"e2e.{suffix}.publish.status",
    }
    database = f"e2e_{suffix}"
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INGEST_", "UPLOADER_", "POLLER_", "SANDBOX_"))
        },
        **topics,
        "REELAY_ENV": "dev",
        "REELAY_LOG_FORMAT": "json",
        "REELAY_TOPIC_PARTITIONS": "3",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": database,
        "TIKTOK_API_BASE_URL": sandbox_url,
        "TIKTOK_CLIENT_KEY": CLIENT_KEY,
        "TIKTOK_CLIENT_SECRET": CLIENT_SECRET,
        "SANDBOX_HOST": "127.0.0.1",
        "SANDBOX_PORT": str(ports["sandbox"]),
        "SANDBOX_CLIENT_KEY": CLIENT_KEY,
        "SANDBOX_CLIENT_SECRET": CLIENT_SECRET,
        # Long enough that the poller sees `processing` even on a loaded machine (a 1 s delay let a
        # late first poll find the post already complete, skipping `processing` in the history).
        "SANDBOX_PROCESSING_DELAY_SECONDS": "3",
        "SANDBOX_DATA_DIR": str(workdir / "sandbox-data"),
        "SANDBOX_WEBHOOK_URL": f"{ingest_url}/v1/webhooks/tiktok",
        "INGEST_HOST": "127.0.0.1",
        "INGEST_PORT": str(ports["ingest"]),
        "INGEST_API_KEYS": API_KEY,
        "INGEST_ALLOW_PRIVATE_URLS": "true",
        "INGEST_OAUTH_REDIRECT_URI": f"{ingest_url}/v1/oauth/callback",
        "UPLOADER_OPS_HOST": "127.0.0.1",
        "UPLOADER_OPS_PORT": str(ports["uploader"]),
        "UPLOADER_ALLOW_PRIVATE_URLS": "true",
        "UPLOADER_CONSUMER_GROUP": f"e2e-uploader-{suffix}",
        "POLLER_OPS_HOST": "127.0.0.1",
        "POLLER_OPS_PORT": str(ports["status-poller"]),
        "POLLER_CONSUMER_GROUP": f"e2e-poller-{suffix}",
        "POLLER_MIN_INTERVAL_SECONDS": "0.5",
        "POLLER_MAX_INTERVAL_SECONDS": "2",
        # Archive settled uploads almost at once, so every e2e flow also reads uploads from history.
        "POLLER_ARCHIVE_GRACE_SECONDS": "1",
        "POLLER_ARCHIVE_INTERVAL_SECONDS": "0.5",
        **blob_store_env(blob_store, workdir=workdir, suffix=suffix, s3=s3),
        **(extra_env or {}),
    }
    (workdir / "sandbox-data").mkdir(parents=True, exist_ok=True)
    stack = Stack(ingest_url=ingest_url, sandbox_url=sandbox_url, env=env, topics=topics, database=database)
    for name, module, port in (
        ("sandbox", "tiktok_sandbox", ports["sandbox"]),
        ("ingest", "reelay_ingest", ports["ingest"]),
        ("uploader", "reelay_uploader", ports["uploader"]),
        ("status-poller", "reelay_status_poller", ports["status-poller"]),
    ):
        stack.services[name] = Service(
            name=name,
            module=module,
            health_url=f"http://127.0.0.1:{port}/healthz",
            log_path=workdir / f"{name}.log",
        )
    try:
        for name in stack.services:
            stack.start(name)
        yield stack
    finally:
        stack.stop_all()


def stack_on(
    request: pytest.FixtureRequest, blob_store: str, *, kafka_bootstrap_servers: str, mongodb_uri: str
) -> AbstractContextManager[Stack]:
    """`running_stack` on `blob_store` in a fresh directory, with the session's S3 (the s3_settings
    fixture: a clear failure when there is none) when the store is s3."""
    s3 = dict(request.getfixturevalue("s3_settings")) if blob_store == "s3" else None
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    return running_stack(
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        mongodb_uri=mongodb_uri,
        workdir=factory.mktemp(f"stack-{blob_store}"),
        blob_store=blob_store,
        s3=s3,
    )


async def wait_for_upload_state(
    client: httpx.AsyncClient,
    url: str,
    *,
    until: set[str],
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Poll an upload's status URL until its state is one of `until` (bounded); its body then."""

    last: dict[str, object] = {}

    async def reached() -> dict[str, object] | None:
        nonlocal last
        resp = await client.get(url, headers=headers)
        if resp.status_code == 200:
            last = resp.json()
        return last if last.get("state") in until else None

    try:
        return await eventually(
            reached, timeout=timeout, interval=0.5, what=f"{url} to reach {sorted(until)}"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last body: {last}") from exc
