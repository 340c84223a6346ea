"""A fake ingest for the CLI's unit tests: an httpx.MockTransport handler with scripted uploads.

It answers as routes.py does (the status codes, UploadAccepted, UploadView, ErrorBody), keeps every
request it saw, and plays each upload's views in order, one per GET, so a follow sees states change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from reelay_cli.commands import Wiring
from reelay_cli.follow import Clock

API_KEY = "unit-key"
BASE = "http://ingest.test"


def error(status: int, code: str, message: str, detail: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return httpx.Response(status, json={"error": body})


def upload_view(
    request_id: str, states: list[str], *, mode: str = "direct", detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An UploadView whose history went through `states` (the last one's `detail` given)."""
    history = [
        {
            "state": s,
            "at": f"2026-12-02T10:00:0{i}Z",
            "source": "ingest" if i == 0 else "poller",
            "detail": {},
        }
        for i, s in enumerate(states)
    ]
    if detail:
        history[-1]["detail"] = detail
    return {
        "request_id": request_id,
        "account_id": "acme",
        "mode": mode,
        "state": states[-1],
        "source": {"kind": "blob"},
        "publish_id": "v_pub_1" if len(states) > 2 else None,
        "post_ids": ["7000"] if states[-1] == "published" else [],
        "video_size": None,
        "uploaded_bytes": 0,
        "history": history,
        "callbacks": [],
        "created_at": "2026-12-02T10:00:00Z",
        "updated_at": "2026-12-02T10:00:09Z",
    }


def account_view(account_id: str, status: str = "connected", **more: Any) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "status": status,
        "scopes": ["video.publish", "video.upload"],
        "missing_scopes": [],
        "access_expires_at": "2026-12-02T12:00:00Z",
        "refresh_expires_at": "2027-12-02T10:00:00Z",
        "creator_info": None,
        **more,
    }


@dataclass
class FakeIngest:
    """The routes the CLI calls; `timelines[request_id]` are the views GET answers, in turn."""

    timelines: dict[str, list[dict[str, Any] | httpx.Response]] = field(default_factory=dict)
    accounts: dict[str, list[dict[str, Any] | httpx.Response]] = field(default_factory=dict)
    refuse: httpx.Response | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _next(self, script: list[dict[str, Any] | httpx.Response]) -> httpx.Response:
        item = script.pop(0) if len(script) > 1 else script[0]
        return item if isinstance(item, httpx.Response) else httpx.Response(200, json=item)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return error(401, "unauthorized", "the API key is not valid")
        path, method = request.url.path, request.method
        if self.refuse is not None:
            return self.refuse
        if path == "/v1/uploads" and method == "POST":
            return self._accept(request)
        if path == "/v1/uploads" and method == "GET":
            items = [script[-1] for script in self.timelines.values() if isinstance(script[-1], dict)]
            return httpx.Response(200, json={"items": items, "count": len(items)})
        if path.startswith("/v1/uploads/"):
            request_id = path.removeprefix("/v1/uploads/")
            if request_id not in self.timelines:
                return error(404, "unknown_upload", f"no upload with request_id {request_id!r}")
            if method == "DELETE":
                return httpx.Response(200, json=upload_view(request_id, ["accepted", "cancelled"]))
            return self._next(self.timelines[request_id])
        if path == "/v1/accounts" and method == "GET":
            items = [script[0] for script in self.accounts.values() if isinstance(script[0], dict)]
            return httpx.Response(200, json={"items": items})
        if path.startswith("/v1/accounts/"):
            rest = path.removeprefix("/v1/accounts/")
            if rest.endswith("/connect") and method == "POST":
                account_id = rest.removesuffix("/connect")
                return httpx.Response(
                    200,
                    json={
                        "account_id": account_id,
                        "authorize_url": f"https://tiktok.test/auth?state=s-{account_id}",
                        "state_expires_at": "2026-12-02T10:10:00Z",
                    },
                )
            if rest not in self.accounts:
                return error(404, "unknown_account", f"account {rest!r} is not registered")
            if method == "DELETE":
                return httpx.Response(200, json=account_view(rest, "disconnected"))
            return self._next(self.accounts[rest])
        return error(404, "not_found", "Not Found")

    def _accept(self, request: httpx.Request) -> httpx.Response:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            body = json.loads(self.bodies[-1])
            account, request_id = body["account_id"], body.get("request_id")
        else:
            raw = self.bodies[-1]
            account = "nobody" if b"\r\n\r\nnobody\r\n" in raw else "acme"
            request_id = None
        if account == "nobody":
            return error(404, "unknown_account", f"account {account!r} is not registered")
        request_id = request_id or "req-1"
        self.timelines.setdefault(request_id, [upload_view(request_id, ["accepted"])])
        return httpx.Response(
            202,
            json={
                "request_id": request_id,
                "state": "accepted",
                "status_url": f"{BASE}/v1/uploads/{request_id}",
                "replayed": False,
            },
        )


@dataclass
class FakeClock:
    """Time that moves only when the code sleeps."""

    t: float = 0.0
    slept: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def clock(self) -> Clock:
        return Clock(now=self.now, sleep=self.sleep)


@dataclass
class Browser:
    """Records the URLs it was asked to open."""

    opened: list[str] = field(default_factory=list)

    def open(self, url: str) -> bool:
        self.opened.append(url)
        return True


def wiring(
    ingest: FakeIngest,
    clock: FakeClock | None = None,
    browser: Browser | None = None,
    *,
    terminal: bool | None = None,
) -> Wiring:
    open_browser: Callable[[str], bool] = (browser or Browser()).open
    return Wiring(
        transport=ingest.transport(),
        clock=(clock or FakeClock()).clock(),
        open_browser=open_browser,
        force_terminal=terminal,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` parsed as JSON (fails on any line that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
