"""The `make up` demo: connect a sandbox user, upload a generated video through the HTTP API, and
print each state change until TikTok (the sandbox) says `published`.

With the sandbox, the account is connected as a team would connect theirs: through TikTok's OAuth
(POST /v1/accounts/demo/connect with the key of make up's dev tenant (`dev_tenant`), the sandbox's
consent page approved for the demo creator, the redirect followed to ingest's callback). With DEMO_*
tokens of another account, those are registered.

Idempotent: the demo creator has a fixed open_id in the sandbox and the demo account (`demo`, of the
dev tenant) is connected again on every run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx

from .config import StackConfig

TERMINAL_STATES = frozenset({"published", "inbox_delivered", "failed", "unconfirmed"})
DEMO_ACCOUNT_ID = "demo"
DEMO_OPEN_ID = "reelay-demo-creator"
DEMO_SCOPES = ["user.info.basic", "video.upload", "video.publish"]


class DemoError(RuntimeError):
    """The demo could not show an upload reaching `published`."""


@dataclass(frozen=True)
class ExternalTokens:
    """Tokens of a real (or other) TikTok account, passed in by DEMO_* env vars."""

    open_id: str
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    scope: str

    def token_json(self) -> dict[str, Any]:
        """The tokens as the sandbox's token endpoint would give them."""
        return {k: v for k, v in asdict(self).items() if k != "open_id"}


def external_tokens(env: Mapping[str, str]) -> ExternalTokens | None:
    """DEMO_OPEN_ID/DEMO_ACCESS_TOKEN/DEMO_REFRESH_TOKEN (all three) or None; half a set is an error."""
    names = ("DEMO_OPEN_ID", "DEMO_ACCESS_TOKEN", "DEMO_REFRESH_TOKEN")
    given = [n for n in names if env.get(n)]
    if not given:
        return None
    if len(given) != len(names):
        missing = ", ".join(n for n in names if n not in given)
        raise DemoError(f"the demo needs all of {', '.join(names)}; missing: {missing}")
    try:
        expires_in = int(env.get("DEMO_EXPIRES_IN") or 86400)
        refresh_expires_in = int(env.get("DEMO_REFRESH_EXPIRES_IN") or 31536000)
    except ValueError as exc:
        raise DemoError(f"DEMO_EXPIRES_IN / DEMO_REFRESH_EXPIRES_IN must be whole seconds: {exc}") from exc
    return ExternalTokens(
        open_id=env["DEMO_OPEN_ID"],
        access_token=env["DEMO_ACCESS_TOKEN"],
        refresh_token=env["DEMO_REFRESH_TOKEN"],
        expires_in=expires_in,
        refresh_expires_in=refresh_expires_in,
        scope=env.get("DEMO_SCOPE") or ",".join(DEMO_SCOPES),
    )


def format_entry(entry: Mapping[str, Any], started: float | None, now: float) -> str:
    """One history entry as a line: state, source, time since the upload started, TikTok detail."""
    detail = entry.get("detail") or {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(detail.items()) if v not in (None, "", [], {}))
    elapsed = f"{f'+{now - started:.1f}s':>7}" if started is not None else " " * 7
    line = f"  {elapsed}  {entry.get('state', '?'):<16} by {entry.get('source', '?'):<9}"
    return f"{line}  {shown}".rstrip()


def new_entries(history: list[dict[str, Any]], seen: int) -> list[dict[str, Any]]:
    """History entries not printed yet (history only grows)."""
    return history[seen:]


def _raise_for(resp: httpx.Response, what: str) -> None:
    if resp.is_error:
        raise DemoError(f"{what}: HTTP {resp.status_code} {resp.text[:500]}")


class Demo:
    """Drives the stack through its public HTTP interfaces, as a client would."""

    def __init__(
        self, cfg: StackConfig, http: httpx.AsyncClient, say: Callable[[str], None], *, api_key: str
    ) -> None:
        self._cfg = cfg
        self._http = http
        self._say = say
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def sandbox_creator(self) -> str:
        """The open_id of the demo's sandbox creator, made on first use.

        The creator has a fixed open_id, so after a sandbox restart (which forgets its users) the
        same creator is made again and the demo account in Mongo stays bound to it.
        """
        base = self._cfg.sandbox_url
        resp = await self._http.post(
            f"{base}/sandbox/users",
            json={
                "username": "demo",
                "open_id": DEMO_OPEN_ID,
                "private_account": False,
                "scopes": DEMO_SCOPES,
            },
        )
        if resp.status_code != 409:  # 409: the sandbox has it already
            _raise_for(resp, "creating the demo creator in the sandbox")
            self._say(f"demo: sandbox creator open_id={DEMO_OPEN_ID} created")
        return DEMO_OPEN_ID

    async def connect(self, open_id: str) -> str:
        """Connect the demo account through OAuth, as a browser would: ask ingest for TikTok's
        authorize URL, approve the consent page for `open_id`, follow the redirect to ingest's
        callback. Returns the account id used (see `register` for the fallback id)."""
        for candidate in (DEMO_ACCOUNT_ID, f"{DEMO_ACCOUNT_ID}-{open_id[-12:]}"):
            resp = await self._http.post(
                f"{self._cfg.ingest_url}/v1/accounts/{candidate}/connect",
                headers=self._headers,
                json={"scopes": DEMO_SCOPES},
            )
            _raise_for(resp, f"starting to connect account {candidate!r}")
            authorize_url = str(resp.json()["authorize_url"])
            page = await self._http.get(authorize_url)
            _raise_for(page, "opening TikTok's consent page")
            form = consent_fields(page.text)
            form.update(sandbox_user=open_id, decision="approve", granted_scope=DEMO_SCOPES)
            callback = await self._http.post(
                httpx.URL(authorize_url).join("/v2/auth/authorize/"),
                data=form,
                headers={"Accept": "application/json"},
                follow_redirects=True,
            )
            if callback.status_code == 409:  # "demo" is bound to another TikTok user
                continue
            _raise_for(callback, f"connecting account {candidate!r} through OAuth")
            scopes = ",".join(callback.json()["scopes"])
            self._say(f"demo: connected account {candidate!r} through OAuth (open_id {open_id}, {scopes})")
            return candidate
        raise DemoError("every demo account id is connected to another TikTok user")

    async def register(self, open_id: str, tokens: Mapping[str, Any]) -> str:
        """Register (or refresh) the demo account with ingest; returns the account id used."""
        # An account id stays bound to one TikTok user (ingest answers 409 otherwise): when "demo"
        # was registered for another user by hand, fall back to an id derived from this one.
        candidates = [DEMO_ACCOUNT_ID, f"{DEMO_ACCOUNT_ID}-{open_id[-12:]}"]
        body = {
            "open_id": open_id,
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "expires_in": int(tokens["expires_in"]),
            "refresh_expires_in": int(tokens["refresh_expires_in"]),
            "scope": tokens.get("scope", ",".join(DEMO_SCOPES)),
        }
        for candidate in candidates:
            resp = await self._http.post(
                f"{self._cfg.ingest_url}/v1/accounts",
                headers=self._headers,
                json={"account_id": candidate, **body},
            )
            if resp.status_code == 409:
                continue
            _raise_for(resp, f"registering account {candidate!r} with ingest")
            verb = "registered" if resp.status_code == 201 else "refreshed the tokens of"
            self._say(f"demo: {verb} account {candidate!r} (TikTok open_id {open_id})")
            return candidate
        raise DemoError(f"every demo account id is taken by another TikTok user: {candidates}")

    async def upload(self, account_id: str, video: Path, size: int) -> str:
        """POST the video (`size` bytes) as multipart; returns the request id."""
        post_info = {"privacy_level": "SELF_ONLY", "title": "Hello from make up #reelay"}
        with video.open("rb") as f:
            resp = await self._http.post(
                f"{self._cfg.ingest_url}/v1/uploads",
                headers=self._headers,
                data={"account_id": account_id, "mode": "direct", "post_info": json.dumps(post_info)},
                files={"file": (video.name, f, "video/mp4")},
            )
        _raise_for(resp, "uploading the sample video")
        request_id = str(resp.json()["request_id"])
        self._say(f"demo: uploaded {video.name} ({size / 1_000_000:.1f} MB), request_id={request_id}")
        return request_id

    async def follow(self, request_id: str, *, wait_seconds: float) -> str:
        """Print each new history entry until the upload is terminal; returns the final state."""
        url = f"{self._cfg.ingest_url}/v1/uploads/{request_id}"
        started = time.monotonic()
        deadline = started + wait_seconds
        seen = 0
        state = "?"
        while time.monotonic() < deadline:
            resp = await self._http.get(url, headers=self._headers)
            _raise_for(resp, "reading the upload's status")
            body = resp.json()
            history = list(body.get("history") or [])
            for entry in new_entries(history, seen):
                self._say(format_entry(entry, started, time.monotonic()))
            seen = len(history)
            state = str(body.get("state"))
            if state in TERMINAL_STATES:
                if body.get("publish_id"):
                    self._say(f"demo: {state}, publish_id={body['publish_id']}")
                return state
            await asyncio.sleep(0.5)
        raise DemoError(f"upload {request_id} was still {state!r} after {wait_seconds:.0f} s")


class _HiddenFields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, Any] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.fields[str(a["name"])] = a.get("value") or ""


def consent_fields(page: str) -> dict[str, Any]:
    """The hidden fields of the sandbox's consent form (the authorize parameters, carried back)."""
    parser = _HiddenFields()
    parser.feed(page)
    if "state" not in parser.fields:
        raise DemoError("TikTok's consent page has no form carrying the state")
    return parser.fields


def sample_video(cfg: StackConfig, size: int) -> Path:
    """A generated, structurally valid MP4 of `size` bytes (kept in .run for the next run)."""
    from tiktok_sandbox.media import write_sample_mp4  # lazy: only the demo needs the sandbox package

    path = cfg.run_dir / "demo" / f"sample-{size}.mp4"
    if not path.exists() or path.stat().st_size != size:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        write_sample_mp4(tmp, size)
        tmp.replace(path)
    return path


async def run_demo(
    cfg: StackConfig,
    env: Mapping[str, str],
    say: Callable[[str], None],
    *,
    api_key: str,
    video_size: int = 8_000_000,
    wait_seconds: float = 180.0,
) -> str | None:
    """Run the demo as the tenant of `api_key` (make up's dev tenant); the account id it posted
    with, or None when there is none to post with (TikTok is not the sandbox and no DEMO_* tokens
    were given)."""
    external = external_tokens(env)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http:
        demo = Demo(cfg, http, say, api_key=api_key)
        if external is not None:
            account_id = await demo.register(external.open_id, external.token_json())
        elif cfg.runs_sandbox:
            account_id = await demo.connect(await demo.sandbox_creator())
        else:
            say(
                f"demo: skipped. TIKTOK_API_BASE_URL points at {cfg.tiktok_api_base_url}, where the demo "
                "cannot create users. Pass DEMO_OPEN_ID, DEMO_ACCESS_TOKEN and DEMO_REFRESH_TOKEN to "
                "post with an account you have."
            )
            return None
        say("demo: uploading a sample video through the ingest API")
        request_id = await demo.upload(account_id, sample_video(cfg, video_size), video_size)
        final = await demo.follow(request_id, wait_seconds=wait_seconds)
    if final != "published":
        raise DemoError(f"upload {request_id} ended {final!r}, not 'published' (see .run/*.log)")
    return account_id
