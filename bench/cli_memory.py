"""The `reelay upload FILE` client streams: its peak memory stays flat as the file grows.

A local HTTP server stands in for ingest (it reads each body to the end, discards it, and answers
202 as ingest does), so only the CLI is measured: `reelay upload` runs as a subprocess per size,
on a sparse file, and its peak RSS (getrusage of the child) and throughput are printed.
Usage: python bench/cli_memory.py [--quick]   (sizes 100 MB and 1 GB; --quick: 10 and 100 MB)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REELAY = Path(sys.executable).with_name("reelay")
MB = 1000 * 1000


class Discard(BaseHTTPRequestHandler):
    """POST /v1/uploads: read the whole body, keep none of it, answer UploadAccepted."""

    def do_POST(self) -> None:
        left = int(self.headers["Content-Length"])
        while left:
            left -= len(self.rfile.read(min(left, 1 << 20)))
        body = json.dumps(
            {"request_id": "bench", "state": "accepted", "status_url": "/v1/uploads/bench", "replayed": False}
        ).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def measure(url: str, path: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one `reelay upload` of `path`, in a child of its own."""
    code = (
        "import resource, subprocess, sys, time;"
        "t = time.monotonic();"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode;"
        "s = time.monotonic() - t;"
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, s)"
    )
    args = [str(REELAY), "upload", str(path), "-a", "bench", "--url", url, "--api-key", "k", "--json"]
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, timeout=900
    )
    rc, rss_kb, seconds = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"reelay upload exited {rc}")
    return int(rss_kb) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    sizes = [10 * MB, 100 * MB] if parser.parse_args().quick else [100 * MB, 1000 * MB]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Discard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"{'file':>8} | {'peak RSS of reelay':>18} | {'MB/s':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"v{size}.mp4"
            with path.open("wb") as f:
                f.truncate(size)  # sparse: no disk used, reads give zeros
            rss, seconds = measure(url, path)
            print(f"{size // MB:>5} MB | {rss:>15.1f} MB | {size / MB / seconds:>6.0f}")
            os.unlink(path)
    server.shutdown()


if __name__ == "__main__":
    main()
