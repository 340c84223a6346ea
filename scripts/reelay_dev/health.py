"""Readiness checks: a Kafka metadata call, a Mongo ping, an HTTP 200 on /healthz, a writable S3 bucket,
an open port.

Third-party clients are imported inside the checks so that `make down` and `make status` run on a
bare Python (before the workspace venv exists) without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from .config import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, Health


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def kafka_ready(bootstrap_servers: str) -> bool:
    """True when the broker answers a cluster metadata request."""
    host, port = _host_port(bootstrap_servers.split(",")[0])
    # Skip the client while the port is closed: aiokafka logs every refused connection.
    if not await asyncio.to_thread(port_open, host, port):
        return False
    from aiokafka.admin import AIOKafkaAdminClient  # lazy: not needed by down/status

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=5000, client_id="reelay-stack-health"
    )
    try:
        await asyncio.wait_for(admin.start(), timeout=10)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout=10)
        return bool(cluster.get("brokers"))
    except Exception:  # any failure means "not ready yet"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def mongo_ready(uri: str) -> bool:
    """True when the server answers `ping`."""
    from pymongo import AsyncMongoClient  # lazy: not needed by down/status

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000, appname="reelay-stack-health"
    )
    try:
        reply = await client.admin.command("ping")
        return bool(reply.get("ok"))
    except Exception:  # any failure means "not ready yet"
        return False
    finally:
        await client.close()


async def http_ok(url: str) -> bool:
    """True when GET `url` answers 200."""
    import httpx  # lazy: not needed by down/status

    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def s3_bucket_ready(bucket_url: str) -> bool:
    """True when the dev identity can create (or already owns) the bucket and write to it.

    Creating the bucket here is what makes a fresh SeaweedFS usable: it has no bucket of its own.
    Every request is signed with the dev keys its `-s3.config` names.
    """
    endpoint, _, bucket = bucket_url.rpartition("/")
    host, port = url_host_port(endpoint)
    if not await asyncio.to_thread(port_open, host, port):
        return False
    from aiobotocore.config import AioConfig  # lazy: not needed by down/status
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError

    config = AioConfig(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        connect_timeout=3,
        read_timeout=10,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    creator = get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=DEV_S3_ACCESS_KEY,
        aws_secret_access_key=DEV_S3_SECRET_KEY,
        config=config,
    )
    try:
        async with creator as client:
            try:
                await client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                    "BucketAlreadyOwnedByYou",
                    "BucketAlreadyExists",
                ):
                    return False
            # The filer and a volume must be up too: a bucket alone does not prove writes work.
            await client.put_object(Bucket=bucket, Key=".reelay-ready", Body=b"ok")
            await client.delete_object(Bucket=bucket, Key=".reelay-ready")
            return True
    except (BotoCoreError, ClientError, OSError):
        return False


def url_host_port(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, its scheme's default port when it names none."""
    scheme, _, rest = url.partition("://")
    hostport = rest.split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit():
        return host.strip("[]"), int(port)
    return hostport.strip("[]"), 443 if scheme == "https" else 80


async def check(health: Health) -> bool:
    """Run one readiness check."""
    if health.kind == "tcp":
        return await asyncio.to_thread(port_open, *url_host_port(health.target), 2.0)
    if health.kind == "kafka":
        return await kafka_ready(health.target)
    if health.kind == "mongo":
        return await mongo_ready(health.target)
    if health.kind == "s3":
        return await s3_bucket_ready(health.target)
    return await http_ok(health.target)
