"""Specification of `python -m reelay_ingest` as a process: it serves, and SIGTERM lets the request
in flight finish before a clean exit (ARCHITECTURE promise 8)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from reelay_testing.waiting import eventually
from tiktok_sandbox.media import iter_sample_mp4

from tests.integration.ingest.ingest_world import API_KEY

MB = 1_000_000
BOUNDARY = "reelayProcessTest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ingest_process(
    kafka_bootstrap_servers: str, mongodb_uri: str, mongo_db: Any, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    suffix = uuid.uuid4().hex[:10]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REELAY_"))},
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": mongo_db.name,
        "REELAY_TOPIC_UPLOAD_REQUESTED": f"it.proc.requested.{suffix}",
        "REELAY_TOPIC_PUBLISH_EVENTS": f"it.proc.events.{suffix}",
        "REELAY_TOPIC_PUBLISH_STATUS": f"it.proc.status.{suffix}",
        "REELAY_TOPIC_PARTITIONS": "1",
        "REELAY_LOG_FORMAT": "json",
        "INGEST_PORT": str(port),
        "INGEST_API_KEYS": API_KEY,
        "INGEST_CHECK_CREATOR_INFO": "false",
    }
    log_path = tmp_path / "ingest.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reelay_ingest"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield proc, f"http://127.0.0.1:{port}", log_path
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


async def slow_form(account_id: str, sent: asyncio.Event, resume: asyncio.Event) -> AsyncIterator[bytes]:
    """A multipart body that pauses mid-file until `resume` is set."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="account_id"\r\n\r\n{account_id}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="mode"\r\n\r\ninbox\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    for i, piece in enumerate(iter_sample_mp4(4 * MB)):
        yield piece
        if i == 1:
            sent.set()
            await resume.wait()
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


class TestIngestProcess:
    async def test_sigterm_finishes_the_upload_in_flight_then_exits_cleanly(
        self, ingest_process: tuple[subprocess.Popen[bytes], str, Path], mongo_db: Any
    ) -> None:
        proc, base_url, log_path = ingest_process
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:

            async def ready() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout=60, what="ingest to be ready")
            resp = await http.post(
                "/v1/accounts",
                headers={"Authorization": f"Bearer {API_KEY}"},
                json={
                    "account_id": "proc-acct",
                    "open_id": "o-1",
                    "access_token": "act.x",
                    "refresh_token": "rft.x",
                    "expires_in": 3600,
                    "refresh_expires_in": 86400,
                    "scope": "video.upload",
                },
            )
            assert resp.status_code == 201, resp.text

            sent, resume = asyncio.Event(), asyncio.Event()
            upload = asyncio.create_task(
                http.post(
                    "/v1/uploads",
                    headers={
                        "Authorization": f"Bearer {API_KEY}",
                        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                        "Idempotency-Key": "proc-1",
                    },
                    content=slow_form("proc-acct", sent, resume),
                )
            )
            await asyncio.wait_for(sent.wait(), timeout=30)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)  # let the signal land while the body is still incomplete
            assert proc.poll() is None, "ingest must not exit with a request in flight"
            resume.set()
            resp = await upload

        assert resp.status_code == 202, resp.text
        exit_code = await asyncio.to_thread(proc.wait, 30)
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown, so the parent sees
        # "terminated by SIGTERM", as for any well-behaved process; anything else is a crash.
        assert exit_code in (0, -signal.SIGTERM), log_path.read_text()
        events = [
            json.loads(line).get("event")
            for line in log_path.read_text().splitlines()
            if line.startswith("{")
        ]
        assert events.index("ingest_stopping") < events.index("ingest_stopped")
        assert not [e for e in events if e in {"request_failed"}]
        assert (
            await mongo_db["uploads_in_flight"].count_documents({"_id": "proc-1", "state": "accepted"}) == 1
        )

    def test_invalid_settings_exit_2_with_a_clear_message(self) -> None:
        env = {**os.environ, "REELAY_ENV": "prod", "INGEST_API_KEYS": "dev-api-key"}
        done = subprocess.run(
            [sys.executable, "-m", "reelay_ingest"], env=env, capture_output=True, timeout=60, check=False
        )

        assert done.returncode == 2
        assert b"invalid settings" in done.stderr
