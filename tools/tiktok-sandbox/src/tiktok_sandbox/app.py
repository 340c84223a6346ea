"""The aiohttp application: one composition root for state, webhooks and routes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from tiktok_sandbox.admin import AdminApi
from tiktok_sandbox.api import TikTokApi
from tiktok_sandbox.core import Sandbox
from tiktok_sandbox.oauth import OAuthApi
from tiktok_sandbox.settings import SandboxSettings
from tiktok_sandbox.state import SandboxState
from tiktok_sandbox.upload import UploadApi
from tiktok_sandbox.webhooks import WebhookSender

SANDBOX_KEY = web.AppKey("sandbox", Sandbox)


def create_app(settings: SandboxSettings) -> web.Application:
    """Build the app and its state; the data directory and HTTP session come alive on startup."""
    sandbox = Sandbox(SandboxState(settings), WebhookSender(settings))
    app = web.Application()
    app[SANDBOX_KEY] = sandbox
    for api in (TikTokApi(sandbox), OAuthApi(sandbox), UploadApi(sandbox), AdminApi(sandbox)):
        app.router.add_routes(api.routes())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        tmp = Path(tempfile.mkdtemp(prefix="tiktok-sandbox-")) if settings.data_dir is None else None
        data_dir = settings.data_dir or tmp or Path(tempfile.gettempdir())
        data_dir.mkdir(parents=True, exist_ok=True)
        sandbox.state.data_dir = data_dir
        async with aiohttp.ClientSession() as session:
            sandbox.webhooks.attach(session)
            try:
                yield
            finally:
                await sandbox.aclose()
                sandbox.state.reset()
                sandbox.webhooks.attach(None)
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)

    app.cleanup_ctx.append(lifecycle)
    return app
