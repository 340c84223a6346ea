"""`python -m reelay_uploader`: run the uploader until SIGTERM/SIGINT (see `main`)."""

from __future__ import annotations

from reelay_uploader.main import main

if __name__ == "__main__":
    main()
