"""Promise 1 under an infrastructure failure: the Mongo-wire server dies mid-upload and comes back.

This test runs its own FerretDB (the binary `make test` installs), so it can kill and restart it
without disturbing the other tests; Kafka is the session's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from tiktok_sandbox.media import write_sample_mp4

from tests.e2e.flows import assert_published_once, connect_account, first_chunk_stored, post_video
from tests.e2e.stack import free_port, running_stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FERRETDB_BIN = Path(
    os.environ.get(
        "FERRETDB_BIN",
        ROOT / ".cache" / "ferretdb" / os.environ.get("FERRETDB_VERSION", "v1.24.2") / "bin" / "ferretdb",
    )
)


OUTAGE_SECONDS = 40


class OwnFerretDB:
    """A FerretDB process over a data directory that outlives the process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                str(FERRETDB_BIN),
                "--handler=sqlite",
                f"--sqlite-url=file:{self.data_dir}/",
                f"--listen-addr=127.0.0.1:{self.port}",
                f"--state-dir={self.data_dir}",
                "--debug-addr=-",
                "--telemetry=disable",
                "--log-level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with MongoClient(self.uri, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                return
            except PyMongoError:
                time.sleep(0.2)
        raise RuntimeError("FerretDB did not answer a ping within 30 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def ferretdb(tmp_path: Path) -> Iterator[OwnFerretDB]:
    if not FERRETDB_BIN.exists():
        pytest.fail(f"{FERRETDB_BIN} is missing: run `make ferretdb` (make test installs it)")
    db = OwnFerretDB(tmp_path / "ferretdb")
    db.start()
    try:
        yield db
    finally:
        db.kill()


class TestMongoRestart:
    async def test_an_upload_survives_the_database_dying_mid_upload_and_posts_once(
        self, ferretdb: OwnFerretDB, kafka_bootstrap_servers: str, tmp_path: Path
    ) -> None:
        with running_stack(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            mongodb_uri=ferretdb.uri,
            workdir=tmp_path / "stack",
        ) as stack:
            async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http:
                account_id, open_id = await connect_account(http, stack)
                video = tmp_path / "restart.mp4"
                write_sample_mp4(video, 100 * 1000 * 1000)
                request_id = await post_video(http, stack, account_id, video)

                # Once TikTok holds part of the video, the database dies without warning.
                publish = await first_chunk_stored(http, stack, open_id)
                await asyncio.to_thread(ferretdb.kill)
                assert publish["complete"] is False, "the upload finished before the kill: nothing was tested"
                # Longer than the driver's server selection (30 s), so the failures reach the services
                # (RetryableError): the consumer loops must hold their records and retry them.
                await asyncio.sleep(OUTAGE_SECONDS)
                await asyncio.to_thread(ferretdb.start)

                await assert_published_once(http, stack, request_id, open_id, video)


class OwnKafka:
    """A one-node KRaft broker (the jars `make test` installs) whose data outlives the process."""

    def __init__(self, base_dir: Path) -> None:
        if str(ROOT / "scripts") not in sys.path:
            sys.path.insert(0, str(ROOT / "scripts"))  # the stack tooling lives with the dev scripts
        from reelay_dev.config import StackConfig, kafka_spec

        ports = {"TEST_KAFKA_PORT": str(free_port()), "TEST_KAFKA_CONTROLLER_PORT": str(free_port())}
        self.cfg = StackConfig.for_tests(ROOT, base_dir, ports, python=sys.executable)
        self.spec = kafka_spec(self.cfg)
        self.bootstrap = self.cfg.kafka_bootstrap_servers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from reelay_dev import procs

        self.process = procs.start(self.cfg, self.spec)
        asyncio.run(self._wait_ready())

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
            try:
                await admin.start()
                await admin.describe_cluster()
                return
            except KafkaError:
                await asyncio.sleep(0.5)
            finally:
                await admin.close()
        raise RuntimeError(f"Kafka did not become ready within 120 s (log: {self.cfg.log_file('kafka')})")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[OwnKafka]:
    broker = OwnKafka(tmp_path / "kafka")
    if not Path(broker.cfg.kafka_libs).exists():
        pytest.fail(f"{broker.cfg.kafka_libs} is missing: run `make kafka` (make test installs it)")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


class TestKafkaRestart:
    async def test_an_upload_survives_the_broker_dying_mid_upload_and_posts_once(
        self, kafka: OwnKafka, mongodb_uri: str, tmp_path: Path
    ) -> None:
        with running_stack(
            kafka_bootstrap_servers=kafka.bootstrap, mongodb_uri=mongodb_uri, workdir=tmp_path / "stack"
        ) as stack:
            async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http:
                account_id, open_id = await connect_account(http, stack)
                video = tmp_path / "restart.mp4"
                write_sample_mp4(video, 100 * 1000 * 1000)
                request_id = await post_video(http, stack, account_id, video)

                publish = await first_chunk_stored(http, stack, open_id)
                # The broker dies while the upload is on its way; VideoUploaded and the commit
                # must wait for it, nothing may be lost or done twice.
                await asyncio.to_thread(kafka.kill)
                assert publish["complete"] is False, "the upload finished before the kill: nothing was tested"
                await asyncio.sleep(OUTAGE_SECONDS / 4)
                await asyncio.to_thread(kafka.start)

                await assert_published_once(http, stack, request_id, open_id, video)
