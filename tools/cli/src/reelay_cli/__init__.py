"""The `reelay` command line: talks to ingest's HTTP API only (docs/architecture.md, "Command line")."""
