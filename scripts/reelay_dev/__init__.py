"""Developer tooling for the local Reelay stack: `make up`/`down`/`status`, test infrastructure, demo."""
