"""Specification of the `reelay` command line against the running stack: the console script as a
subprocess, configured by REELAY_URL / REELAY_API_KEY, as a person or a CI job would run it."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from tiktok_sandbox.media import write_sample_mp4

from tests.browser import consent
from tests.e2e.flows import connect_account
from tests.e2e.stack import API_KEY, Stack

pytestmark = pytest.mark.e2e

# The console script `uv sync` installs beside this interpreter (the workspace's .venv/bin/reelay).
REELAY = Path(sys.executable).with_name("reelay")
VIDEO_BYTES = 3 * 1000 * 1000
WAIT = ("--wait", "--timeout", "240")


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str


async def reelay(stack: Stack, *args: str, env: dict[str, str] | None = None) -> Ran:
    """Run `reelay ARGS` to its end (stdout and stderr are pipes: no terminal)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REELAY_")}
    environment.update({"REELAY_URL": stack.ingest_url, "REELAY_API_KEY": API_KEY, **(env or {})})
    proc = await asyncio.create_subprocess_exec(
        str(REELAY),
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def media_server(video_dir: Path) -> Iterator[str]:
    """`video_dir` over HTTP on loopback, as an upstream's media server would serve it."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(video_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class TestTheCommandLine:
    async def test_a_file_upload_waits_until_published_and_exits_0(
        self, stack: Stack, http: httpx.AsyncClient, video_dir: Path
    ) -> None:
        account_id, _ = await connect_account(http, stack)
        video = write_sample_mp4(video_dir / "cli.mp4", VIDEO_BYTES)
        ran = await reelay(
            stack, "upload", str(video), "--account", account_id, "--title", "cli #reelay", *WAIT
        )
        assert ran.code == 0, f"{ran}\n{stack.logs()}"
        request_id = ran.stdout.splitlines()[0].removeprefix("accepted ")
        printed = [line.split()[1] for line in ran.stdout.splitlines() if line[:2].isdigit()]
        # Each state of the upload's history, once, in order (on a loaded machine a poll may find the
        # post complete and `processing` is then not in the history at all).
        upload = (await http.get(f"{stack.ingest_url}/v1/uploads/{request_id}", headers=stack.headers)).json()
        assert printed == [entry["state"] for entry in upload["history"]]
        assert printed[:3] == ["accepted", "uploading", "uploaded"]
        assert printed[-1] == "published"
        assert ran.stdout.splitlines()[-1].startswith("published")
        # Not a terminal: plain progress lines on stderr, the last one the whole file.
        progress = [line for line in ran.stderr.splitlines() if line.startswith("uploading cli.mp4:")]
        assert progress[-1] == f"uploading cli.mp4: 100% ({VIDEO_BYTES} of {VIDEO_BYTES} bytes)"

    async def test_a_url_upload_with_json_prints_json_lines_and_ends_published(
        self, stack: Stack, http: httpx.AsyncClient, video_dir: Path, media_server: str
    ) -> None:
        account_id, _ = await connect_account(http, stack)
        write_sample_mp4(video_dir / "remote.mp4", VIDEO_BYTES)
        ran = await reelay(
            stack,
            "upload",
            f"{media_server}/remote.mp4",
            "-a",
            account_id,
            "--request-id",
            "cli-url-1",
            "--json",
            *WAIT,
        )
        assert ran.code == 0, f"{ran}\n{stack.logs()}"
        lines = [json.loads(line) for line in ran.stdout.splitlines()]
        assert lines[0]["type"] == "accepted"
        assert lines[0]["request_id"] == "cli-url-1"
        assert [line["state"] for line in lines if line["type"] == "state"][-1] == "published"
        assert lines[-1]["type"] == "result"
        assert lines[-1]["exit_code"] == 0
        assert lines[-1]["upload"]["source"]["kind"] == "url"

        status = await reelay(stack, "status", "cli-url-1", "--json")
        assert status.code == 0
        assert json.loads(status.stdout)["state"] == "published"
        listing = await reelay(stack, "uploads", "--account", account_id, "--json")
        assert [item["request_id"] for item in json.loads(listing.stdout)["items"]] == ["cli-url-1"]
        account = await reelay(stack, "accounts", "show", account_id, "--json")
        assert json.loads(account.stdout)["status"] == "connected"

    async def test_an_unknown_account_exits_1_with_the_api_s_error_code(
        self, stack: Stack, video_dir: Path
    ) -> None:
        video = write_sample_mp4(video_dir / "nobody.mp4", 200_000)
        ran = await reelay(stack, "upload", str(video), "--account", "nobody-at-all", "--wait")
        assert ran.code == 1
        [error] = [line for line in ran.stderr.splitlines() if line.startswith("error: ")]
        assert error.startswith("error: unknown_account: account 'nobody-at-all' is not registered")
        assert error.endswith("(HTTP 404)")
        assert "Traceback" not in ran.stderr
        as_json = await reelay(
            stack, "upload", "https://cdn.example.com/v.mp4", "-a", "nobody-at-all", "--json"
        )
        assert as_json.code == 1
        assert json.loads(as_json.stdout)["error"]["code"] == "unknown_account"

    async def test_usage_errors_exit_2(self, stack: Stack) -> None:
        missing_flag = await reelay(stack, "upload", "https://cdn.example.com/v.mp4")
        assert missing_flag.code == 2
        assert "--account" in missing_flag.stderr
        no_key = await reelay(stack, "uploads", env={"REELAY_API_KEY": ""})
        assert no_key.code == 2
        assert "REELAY_API_KEY" in no_key.stderr


class TestAccountsFromTheCommandLine:
    async def test_connect_waits_for_the_oauth_round_trip_then_list_and_disconnect(
        self, stack: Stack, http: httpx.AsyncClient
    ) -> None:
        username = f"cli-{os.urandom(4).hex()}"
        resp = await http.post(f"{stack.sandbox_url}/sandbox/users", json={"username": username})
        resp.raise_for_status()
        account_id = f"acct-{username}"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("REELAY_")}
        environment.update({"REELAY_URL": stack.ingest_url, "REELAY_API_KEY": API_KEY})
        proc = await asyncio.create_subprocess_exec(
            str(REELAY),
            *("accounts", "connect", account_id, "--no-browser", "--json", "--timeout", "120"),
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            # The CLI prints TikTok's authorize URL first, then waits; the creator approves meanwhile.
            first = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=60))
            assert first["type"] == "authorize"
            page = await consent(http, first["authorize_url"], creator=username)
            assert page.status_code == 200, f"{page.text}\n{stack.logs()}"
            rest, err = await asyncio.wait_for(proc.communicate(), timeout=180)
        finally:
            if proc.returncode is None:
                proc.kill()
        assert proc.returncode == 0, f"{rest.decode()}\n{err.decode()}"
        result = json.loads(rest.decode().splitlines()[-1])
        assert result["type"] == "result"
        assert result["account"]["status"] == "connected"

        listed = await reelay(stack, "accounts", "list", "--json")
        assert listed.code == 0
        assert account_id in [a["account_id"] for a in json.loads(listed.stdout)["items"]]
        gone = await reelay(stack, "accounts", "disconnect", account_id, "--json")
        assert gone.code == 0, gone
        assert json.loads(gone.stdout)["status"] == "disconnected"
        again = await reelay(stack, "accounts", "show", account_id, "--json")
        assert json.loads(again.stdout)["status"] == "disconnected"
