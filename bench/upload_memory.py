"""Benchmark: peak memory of one upload vs the video's size (ARCHITECTURE promise 3).

Two ways to send the same file through Reelay's TikTok client to a real sandbox process:
- `streaming`: what the uploader does — each chunk PUT streams pieces read from the file;
- `prototype`: what the original prototype did — read the whole file into memory, then PUT.
Each run happens in a fresh child process, whose peak RSS (ru_maxrss) is the figure; both ways
run side by side in one invocation, so the ratios compare like with like on a noisy machine.

    uv run python bench/upload_memory.py --sizes-mb 50 200 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import SecretStr
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.upload import upload_chunks
from reelay_common.domain.chunks import plan_chunks
from reelay_testing.readers import BytesVideoReader, FileVideoReader
from tiktok_sandbox.media import write_sample_mp4

CLIENT_KEY, CLIENT_SECRET = "bench-key", "bench-secret"
PIECE = 256 * 1024


async def one_upload(base_url: str, path: Path, mode: str) -> dict[str, float]:
    """Child side: init a publish and upload `path` the given way; report peak RSS and time."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
        user = (await http.post(f"{base_url}/sandbox/users", json={"username": f"bench-{mode}"})).json()
        tokens = (await http.post(f"{base_url}/sandbox/users/{user['open_id']}/tokens")).json()
        client = TikTokClient(
            http, base_url=base_url, client_key=CLIENT_KEY, client_secret=SecretStr(CLIENT_SECRET)
        )
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        if mode == "prototype":
            reader: FileVideoReader | BytesVideoReader = BytesVideoReader(
                await asyncio.to_thread(path.read_bytes), piece_size=PIECE
            )
        else:
            reader = FileVideoReader(path)
        plan = plan_chunks(reader.size)
        init = await client.init_inbox(tokens["access_token"], plan)
        assert init.upload_url is not None
        await upload_chunks(client, init.upload_url, plan, reader)
        elapsed = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_rss_mb": peak, "baseline_rss_mb": baseline, "seconds": elapsed}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[50, 200, 400])
    parser.add_argument("--child", nargs=3, metavar=("BASE_URL", "PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        base_url, path, mode = args.child
        print(json.dumps(asyncio.run(one_upload(base_url, Path(path), mode))))
        return

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="reelay-bench-"))
    env = {
        **os.environ,
        "SANDBOX_PORT": str(port),
        "SANDBOX_CLIENT_KEY": CLIENT_KEY,
        "SANDBOX_CLIENT_SECRET": CLIENT_SECRET,
        "SANDBOX_DATA_DIR": str(workdir / "sandbox"),
        "SANDBOX_RATE_LIMIT_INIT": "1000",
        "SANDBOX_LOG_LEVEL": "warning",
    }
    (workdir / "sandbox").mkdir()
    sandbox = subprocess.Popen([sys.executable, "-m", "tiktok_sandbox"], env=env, stdout=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        rows = []
        for size_mb in args.sizes_mb:
            path = workdir / f"video-{size_mb}.mp4"
            write_sample_mp4(path, size_mb * 1000 * 1000)
            result: dict[str, dict[str, float]] = {}
            for mode in ("streaming", "prototype"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", base_url, str(path), mode],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                result[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            path.unlink()
            rows.append((size_mb, result))
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)

    print(f"command: uv run python bench/upload_memory.py --sizes-mb {' '.join(map(str, args.sizes_mb))}")
    print(
        "| video | RSS before upload | streaming peak RSS | prototype peak RSS "
        "| prototype / streaming | streaming s | prototype s |"
    )
    print("|---|---|---|---|---|---|---|")
    for size_mb, r in rows:
        s, p = r["streaming"], r["prototype"]
        print(
            f"| {size_mb} MB | {s['baseline_rss_mb']:.0f} MB | {s['peak_rss_mb']:.0f} MB "
            f"| {p['peak_rss_mb']:.0f} MB | "
            f"{p['peak_rss_mb'] / s['peak_rss_mb']:.1f}x | {s['seconds']:.1f} | {p['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
