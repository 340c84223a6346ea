"""`python -m reelay_status_poller`: consume publish events and poll TikTok until SIGTERM/SIGINT."""

from __future__ import annotations

from reelay_status_poller.main import main

if __name__ == "__main__":
    main()
