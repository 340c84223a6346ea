"""`make up`'s dev tenant: a tenant `dev` with a key of its own, which the demo posts with
(docs/architecture.md, "Tenants"; README, "Tenants and API keys").

A key is shown once, so the key made on the first run is kept in `.run/dev-tenant.key` (mode 0600)
and used again while ingest accepts it; a key that no longer works (revoked, or another database)
is replaced by a new one. The tenant and key are made with `reelay-admin`, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from .config import DEV_TENANT, StackConfig, service_env

KEY_FILE = "dev-tenant.key"


class DevTenantError(RuntimeError):
    """The dev tenant or its key could not be made."""


def key_file(cfg: StackConfig) -> Path:
    return cfg.run_dir / KEY_FILE


async def _admin(cfg: StackConfig, env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    """Run `reelay-admin ARGS` with the services' settings: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        cfg.python,
        "-m",
        "reelay_ingest.admin",
        *args,
        env={**env, **service_env(cfg)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def _works(cfg: StackConfig, http: httpx.AsyncClient, key: str) -> bool:
    resp = await http.get(
        f"{cfg.ingest_url}/v1/uploads", params={"limit": 1}, headers={"Authorization": f"Bearer {key}"}
    )
    return resp.status_code == 200


def _refused(step: Sequence[str], code: int, err: str) -> DevTenantError:
    return DevTenantError(f"reelay-admin {' '.join(step)} exited {code}: {err.strip()[:500]}")


async def ensure_dev_key(
    cfg: StackConfig, env: Mapping[str, str], http: httpx.AsyncClient, say: Callable[[str], None]
) -> str:
    """The dev tenant's key: the one kept from an earlier run while it works, else a new one."""
    path = key_file(cfg)
    if path.exists():
        kept = path.read_text().strip()
        if kept and await _works(cfg, http, kept):
            return kept
        say("dev tenant: the kept key no longer works; making a new one")
    step: tuple[str, ...] = ("tenants", "create", DEV_TENANT, "--name", "make up's dev tenant")
    code, _, err = await _admin(cfg, env, *step)
    if code == 0:
        say(f"dev tenant: created tenant {DEV_TENANT!r}")
    elif "exists already" not in err:
        raise _refused(step, code, err)
    step = ("keys", "create", DEV_TENANT, "--label", "make up", "--json")
    code, out, err = await _admin(cfg, env, *step)
    if code != 0:
        raise _refused(step, code, err)
    made = json.loads(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(made["key"] + "\n")
    say(f"dev tenant: made key {made['key_id']} (kept in {path})")
    return str(made["key"])
