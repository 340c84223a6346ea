"""Run the sandbox in-process for tests: `async with running_sandbox(...) as sb: sb.base_url`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tiktok_sandbox.app import SANDBOX_KEY, create_app
from tiktok_sandbox.core import Sandbox
from tiktok_sandbox.faults import FaultConfig
from tiktok_sandbox.settings import SandboxSettings
from tiktok_sandbox.state import SandboxState, User


@dataclass
class SandboxHandle:
    """A running sandbox: its URL and direct access to its state."""

    base_url: str
    settings: SandboxSettings
    sandbox: Sandbox

    @property
    def state(self) -> SandboxState:
        """Users, tokens, publishes, counters; read freely, mutate with care."""
        return self.sandbox.state

    @property
    def default_user(self) -> User:
        """The user /v2/auth/authorize/ consents as unless told otherwise."""
        return self.state.default_user

    def add_user(self, username: str, **kwargs: Any) -> User:
        """Create a user (same fields as `POST /sandbox/users`)."""
        if "scopes" in kwargs and kwargs["scopes"] is not None:
            kwargs["scopes"] = frozenset(kwargs["scopes"])
        return self.state.add_user(username=username, **kwargs)

    def issue_tokens(self, open_id: str, scopes: list[str] | None = None) -> dict[str, Any]:
        """A token pair as oauth/token returns it."""
        user = self.state.users[open_id]
        return self.state.issue_tokens(open_id, frozenset(scopes) if scopes is not None else user.scopes)

    def set_faults(self, **faults: Any) -> None:
        """Replace the standing faults (fields of FaultConfig)."""
        self.state.faults.set(FaultConfig.model_validate(faults))


@asynccontextmanager
async def running_sandbox(**overrides: Any) -> AsyncIterator[SandboxHandle]:
    """Start the sandbox on 127.0.0.1 on a free port; settings fields may be overridden."""
    settings = SandboxSettings.model_validate({"host": "127.0.0.1", "port": 0, **overrides})
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base_url = f"http://127.0.0.1:{port}"
        sandbox = app[SANDBOX_KEY]
        if settings.public_base_url is None:
            sandbox.state.public_base_url = base_url
        yield SandboxHandle(base_url=base_url, settings=settings, sandbox=sandbox)
    finally:
        await runner.cleanup()
