"""`python -m reelay_ingest.admin`: the same as the `reelay-admin` console script."""

from __future__ import annotations

from reelay_ingest.admin.cli import main

if __name__ == "__main__":
    main()
