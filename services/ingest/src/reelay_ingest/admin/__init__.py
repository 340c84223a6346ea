"""`reelay-admin`: operator commands that work on the stored state directly (tenants and API keys,
token keys, indexes). Each command group lives in a module of its own, added to `cli.app`."""
