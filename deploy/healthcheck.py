"""The image's HEALTHCHECK: GET /healthz of whichever Reelay process runs in this container.

One image runs any of the four processes, each on its own port (read from the same env vars the
process reads), so this asks each port and is healthy when one answers 200. Standard library only.
"""

import os
import sys
import urllib.error
import urllib.request

PORTS = (
    ("INGEST_PORT", "8000"),
    ("UPLOADER_OPS_PORT", "9101"),
    ("POLLER_OPS_PORT", "9102"),
    ("SANDBOX_PORT", "8100"),
)


def healthy(port: str) -> bool:
    """Whether 127.0.0.1:port answers /healthz with 200 within 2 s."""
    try:
        # Loopback only: the process of this very container.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    sys.exit(0 if any(healthy(os.environ.get(name, default)) for name, default in PORTS) else 1)
