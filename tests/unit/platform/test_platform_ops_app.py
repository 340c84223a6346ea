"""The ops app: liveness always, readiness only when every check passes, Prometheus metrics."""

from __future__ import annotations

import asyncio

import httpx
from reelay_common.adapters.ops_server import create_ops_app


async def ok() -> bool:
    return True


async def down() -> bool:
    return False


async def broken() -> bool:
    raise ConnectionError("no route")


def client_for(**checks: object) -> httpx.AsyncClient:
    app = create_ops_app(checks)  # type: ignore[arg-type]  # the checks above are the right callables
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops")


class TestOpsApp:
    async def test_healthz_answers_while_the_process_runs(self) -> None:
        async with client_for(kafka=down) as client:
            response = await client.get("/healthz")
        assert response.status_code == 200

    async def test_readyz_is_200_when_every_check_passes(self) -> None:
        async with client_for(kafka=ok, mongo=ok) as client:
            response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"ready": True, "checks": {"kafka": True, "mongo": True}}

    async def test_readyz_is_503_and_names_the_failing_check(self) -> None:
        async with client_for(kafka=ok, mongo=down) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"kafka": True, "mongo": False}

    async def test_a_check_that_raises_counts_as_not_ready(self) -> None:
        async with client_for(kafka=broken) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"kafka": False}

    async def test_checks_run_concurrently(self) -> None:
        async def slow() -> bool:
            await asyncio.sleep(0.3)
            return True

        async with client_for(a=slow, b=slow, c=slow) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await client.get("/readyz")
            elapsed = loop.time() - started
        assert response.status_code == 200
        assert elapsed < 0.8

    async def test_metrics_are_in_prometheus_text_format(self) -> None:
        import reelay_common.adapters.kafka.consumer  # noqa: F401  # registers the consumer-loop metrics

        async with client_for() as client:
            response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "reelay_kafka_records_total" in response.text
