"""`python -m reelay_ingest`: serve the ingest API until SIGTERM/SIGINT (see `main`)."""

from __future__ import annotations

from reelay_ingest.main import main

if __name__ == "__main__":
    main()
