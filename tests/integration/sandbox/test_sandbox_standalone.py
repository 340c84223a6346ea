"""`python -m tiktok_sandbox` serves on its own; chunk bodies stream to disk in bounded memory."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from reelay_testing.waiting import eventually
from tiktok_sandbox.media import iter_sample_mp4
from tiktok_sandbox.testing import SandboxHandle

from tests.integration.sandbox.sandbox_support import Api, plan, ranges


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestStandalone:
    async def test_module_serves_and_stops_on_sigterm(self, tmp_path: Path) -> None:
        port = _free_port()
        env = {
            **os.environ,
            "SANDBOX_PORT": str(port),
            "SANDBOX_DATA_DIR": str(tmp_path),
            "SANDBOX_CLIENT_SECRET": "standalone-secret",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tiktok_sandbox",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

                async def healthy() -> bool:
                    try:
                        return (await http.get("/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(healthy, timeout=20, interval=0.02)
                user = (await http.get("/sandbox/users")).json()["users"][0]
                tokens = (await http.post(f"/sandbox/users/{user['open_id']}/tokens")).json()
                resp = await Api(http, tokens["access_token"]).init_direct(plan(1_000_000))
                assert resp.json()["data"]["upload_url"].startswith(f"http://127.0.0.1:{port}/upload/?")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, stderr.decode()
        assert b"sandbox_starting" in stderr
        assert b"standalone-secret" not in stderr


async def _range_body(total: int, first: int, last: int) -> AsyncIterator[bytes]:
    """Bytes first..last of the sample, cut from the generator without holding the file."""
    pos = 0
    for piece in iter_sample_mp4(total):
        end = pos + len(piece)
        if end > first and pos <= last:
            yield piece[max(first - pos, 0) : min(last + 1 - pos, len(piece))]
        pos = end
        if pos > last:
            return


class TestStreaming:
    async def test_a_128_mb_upload_keeps_memory_flat(self, api: Api, sandbox: SandboxHandle) -> None:
        total = 127_999_999
        source = plan(total, 63_999_999)
        d = (await api.init_direct(source)).json()["data"]
        tracemalloc.start()
        try:
            statuses = []
            for first, last in ranges(source):
                headers = {
                    "Content-Type": "video/mp4",
                    "Content-Range": f"bytes {first}-{last}/{total}",
                    "Content-Length": str(last - first + 1),
                }
                resp = await api.http.put(
                    d["upload_url"], content=_range_body(total, first, last), headers=headers
                )
                statuses.append(resp.status_code)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert statuses == [206, 201]
        assert peak < 16 * 2**20  # client + server together, for 128 MB moved
        assert sandbox.state.publishes[d["publish_id"]].complete
