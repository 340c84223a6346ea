"""Benchmark: the CPU of reading a video URL through `UrlVideoReader`, nothing else.

The uploader's URL rows in `bench/upload_speed.py` share two cores with the sandbox and the
source server, so every CPU second the reader spends is wall time lost to the PUTs. This reads
a generated video from the same source server (a child process sending with sendfile) through
the reader, as the uploader builds it (`guarded_transport`, one GET kept open across chunks),
in chunks of `--chunk-mb`, and prints the wall and CPU time of each run and how many pieces the
reader handed out. `--transports guarded httpx` reads, turn by turn in one run, through the
uploader's transport and through httpx's own (httpcore, h11 and anyio), for a side-by-side ratio.

    uv run python bench/url_read.py --size-mb 1000 --repeat 3 --transports guarded httpx
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from reelay_common.adapters.guarded_http import guarded_transport
from reelay_common.adapters.url_reader import UrlVideoReader
from tiktok_sandbox.media import write_sample_mp4

MB = 1000 * 1000


TRANSPORTS = {
    "guarded": lambda: guarded_transport(allow_private=True),  # the uploader's: aiohttp underneath
    "httpx": httpx.AsyncHTTPTransport,  # httpx's own
}


async def read_runs(url: str, *, chunk: int, repeat: int, transports: list[str]) -> list[dict[str, object]]:
    runs: list[dict[str, object]] = []
    for _ in range(repeat):
        for name in transports:  # turn by turn: the machine's noise falls on every side alike
            runs.append({"transport": name, **await read_once(url, chunk=chunk, transport=name)})
    return runs


async def read_once(url: str, *, chunk: int, transport: str) -> dict[str, float]:
    async with httpx.AsyncClient(
        transport=TRANSPORTS[transport](), timeout=httpx.Timeout(60.0, connect=10.0)
    ) as http:
        cpu, wall = time.process_time(), time.perf_counter()
        read = pieces = 0
        async with await UrlVideoReader.open(http, url, allow_private=True) as reader:
            for first in range(0, reader.size, chunk):
                async for piece in reader.stream(first, min(chunk, reader.size - first)):
                    read += len(piece)
                    pieces += 1
        return {
            "bytes": read,
            "seconds": round(time.perf_counter() - wall, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3),
            "pieces": pieces,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--chunk-mb", type=int, default=10, help="the uploader's default chunk")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-range", action="store_true", help="a source that ignores Range")
    parser.add_argument("--transports", nargs="+", choices=sorted(TRANSPORTS), default=["guarded"])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="reelay-bench-url-read-"))
    video, port_file = workdir / "video.mp4", workdir / "source.port"
    write_sample_mp4(video, args.size_mb * MB)
    server = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("upload_speed.py")),
            "--serve-source",
            str(workdir),
            str(port_file),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the source server did not start")
            time.sleep(0.1)
        kind = "norange" if args.no_range else "range"
        url = f"http://127.0.0.1:{port_file.read_text()}/{kind}/{video.name}"
        for run in asyncio.run(
            read_runs(url, chunk=args.chunk_mb * MB, repeat=args.repeat, transports=args.transports)
        ):
            print(json.dumps(run))
    finally:
        server.terminate()
        server.wait(timeout=30)
        video.unlink(missing_ok=True)
        port_file.unlink(missing_ok=True)
        workdir.rmdir()


if __name__ == "__main__":
    main()
