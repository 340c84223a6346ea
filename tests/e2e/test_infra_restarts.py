"""Promise 1 under an infrastructure failure: the Mongo-wire server, or the broker, dies mid-upload
and comes back; on every blob store (with gridfs the video itself lives in the database that dies).

This module runs its own FerretDB and its own Kafka (what `make test` installs), so it can kill and
restart them without disturbing the other tests; one stack per blob store over them serves both
tests of that store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from tiktok_sandbox.media import write_sample_mp4

from tests.e2e.flows import (
    MID_UPLOAD_VIDEO_BYTES,
    assert_published_once,
    connect_account,
    first_chunk_stored,
    post_video,
)
from tests.e2e.stack import BLOB_STORES, Stack, free_port, stack_on

# One module-scoped stack per store: pytest runs the tests of one store together.
pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("blob_store", BLOB_STORES, scope="module")]

ROOT = Path(__file__).resolve().parents[2]
FERRETDB_BIN = Path(
    os.environ.get(
        "FERRETDB_BIN",
        ROOT / ".cache" / "ferretdb" / os.environ.get("FERRETDB_VERSION", "v1.24.2") / "bin" / "ferretdb",
    )
)


# Longer than the services' server selection (10 s, reelay_common.adapters.mongo.client.connect), so
# the failures reach the services (RetryableError): the consumer loops must hold their records and
# retry them.
MONGO_OUTAGE_SECONDS = 15
KAFKA_OUTAGE_SECONDS = 10


class OwnServer:
    """A server process this module starts, SIGKILLs and starts again."""

    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def ensure_running(self) -> None:
        """Start it again if an earlier test failed before bringing it back."""
        if self.process is None or self.process.poll() is not None:
            self.start()


class OwnFerretDB(OwnServer):
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


class OwnKafka(OwnServer):
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


@contextmanager
def own(server: OwnServer) -> Iterator[None]:
    """Run `server` for the module; kill it at the end."""
    server.start()
    try:
        yield
    finally:
        server.kill()


@pytest.fixture(scope="module")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnFerretDB]:
    if not FERRETDB_BIN.exists():
        pytest.fail(f"{FERRETDB_BIN} is missing: run `make ferretdb` (make test installs it)")
    db = OwnFerretDB(tmp_path_factory.mktemp("own-ferretdb"))
    with own(db):
        yield db


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnKafka]:
    broker = OwnKafka(tmp_path_factory.mktemp("own-kafka"))
    if not Path(broker.cfg.kafka_libs).exists():
        pytest.fail(f"{broker.cfg.kafka_libs} is missing: run `make kafka` (make test installs it)")
    with own(broker):
        yield broker


@pytest.fixture(scope="module")
def restart_stack(
    request: pytest.FixtureRequest, blob_store: str, kafka: OwnKafka, ferretdb: OwnFerretDB
) -> Iterator[Stack]:
    """The whole stack on `blob_store`, over this module's own broker and database."""
    with stack_on(
        request, blob_store, kafka_bootstrap_servers=kafka.bootstrap, mongodb_uri=ferretdb.uri
    ) as s:
        yield s


class TestInfraRestarts:
    # What dies, and for how long. The database: with gridfs the rest of the video is in it too.
    # The broker: VideoUploaded and the commit must wait for it.
    @pytest.mark.parametrize("dying", ["database", "broker"])
    async def test_an_upload_survives_the_database_or_broker_dying_mid_upload_and_posts_once(
        self, dying: str, restart_stack: Stack, kafka: OwnKafka, ferretdb: OwnFerretDB, tmp_path: Path
    ) -> None:
        server: OwnServer = ferretdb if dying == "database" else kafka
        outage = MONGO_OUTAGE_SECONDS if dying == "database" else KAFKA_OUTAGE_SECONDS
        await asyncio.to_thread(ferretdb.ensure_running)  # an earlier test may have failed mid-outage
        await asyncio.to_thread(kafka.ensure_running)
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http:
            account_id, open_id = await connect_account(http, restart_stack)
            video = tmp_path / "restart.mp4"
            write_sample_mp4(video, MID_UPLOAD_VIDEO_BYTES)
            request_id = await post_video(http, restart_stack, account_id, video)

            # Once TikTok holds part of the video, the server dies without warning; nothing may be
            # lost or done twice.
            publish = await first_chunk_stored(http, restart_stack, open_id)
            await asyncio.to_thread(server.kill)
            assert publish["complete"] is False, "the upload finished before the kill: nothing was tested"
            await asyncio.sleep(outage)
            await asyncio.to_thread(server.start)

            await assert_published_once(http, restart_stack, request_id, open_id, video)
