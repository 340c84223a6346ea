"""serve_ops on a real socket: it answers while running and is gone once `stop` is set."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from reelay_common.adapters.ops_server import serve_ops


async def ready() -> bool:
    return True


class TestServeOps:
    async def test_serves_until_stopped_then_releases_the_port(self) -> None:
        stop = asyncio.Event()
        bound: list[int] = []
        task = asyncio.create_task(
            serve_ops(host="127.0.0.1", port=0, checks={"kafka": ready}, stop=stop, on_bound=bound.append)
        )
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                for _ in range(100):  # bounded wait for the listener
                    if bound:
                        try:
                            response = await client.get(f"http://127.0.0.1:{bound[0]}/readyz")
                            break
                        except httpx.ConnectError:
                            pass
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the ops server never answered")
                assert response.status_code == 200
                assert (await client.get(f"http://127.0.0.1:{bound[0]}/healthz")).status_code == 200
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)
        with socket.create_server(("127.0.0.1", bound[0])):
            pass  # the port is free again

    async def test_a_port_in_use_is_a_clear_error_not_an_exit(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port}"):
                await serve_ops(host="127.0.0.1", port=port, checks={}, stop=asyncio.Event())
