"""Conformance table: every documented rule, violated once, answered with TikTok's status and code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.integration.sandbox.sandbox_support import FAST, PUBLIC, SELF_ONLY, Api, code, plan

MB = 1_000_000


@dataclass
class Ctx:
    """What a case needs to provoke its violation."""

    sb: SandboxHandle
    http: httpx.AsyncClient
    api: Api
    publishes_before_last_call: int = 0

    def as_user(self, username: str = "other", scopes: list[str] | None = None, **user: Any) -> Api:
        """A caller acting for a new user (optionally with a narrower token)."""
        u = self.sb.add_user(username, **user)
        return Api(self.http, self.sb.issue_tokens(u.open_id, scopes)["access_token"])


Act = Callable[[Ctx], Awaitable[httpx.Response]]


@dataclass
class Case:
    id: str
    act: Act
    status: int
    code: str
    settings: dict[str, Any] = field(default_factory=dict)
    message: str | None = None


INIT = "/v2/post/publish/video/init/"
GOOD_SOURCE = plan(4_194_304)


async def _raw(ctx: Ctx, path: str, content: bytes, content_type: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ctx.api.token}", "Content-Type": content_type}
    return await ctx.http.post(path, content=content, headers=headers)


async def _repeat(times: int, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    for _ in range(times - 1):
        resp = await call()
        assert resp.status_code == 200, resp.text
    return await call()


async def _then(
    setup: Callable[[], Awaitable[httpx.Response]], act: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response:
    resp = await setup()
    assert resp.status_code == 200, resp.text
    return await act()


async def _other_users_publish(ctx: Ctx) -> httpx.Response:
    pid = (await ctx.api.init_direct(GOOD_SOURCE)).json()["data"]["publish_id"]
    return await ctx.as_user().status(pid)


async def _cancel_file_upload(ctx: Ctx) -> httpx.Response:
    pid = (await ctx.api.init_direct(GOOD_SOURCE)).json()["data"]["publish_id"]
    return await ctx.api.cancel(pid)


async def _active_user_cap(ctx: Ctx) -> httpx.Response:
    for i in range(5):
        caller = ctx.as_user(f"creator{i}", private_account=True)
        assert (await caller.init_direct(GOOD_SOURCE, SELF_ONLY)).status_code == 200
    return await ctx.as_user("sixth", private_account=True).init_direct(GOOD_SOURCE, SELF_ONLY)


def _bad_plan(case_id: str, video_size: int, chunk_size: int, count: int) -> Case:
    return Case(
        case_id,
        lambda c: c.api.init_direct(plan(video_size, chunk_size, count)),
        400,
        "invalid_params",
        message="The chunk size is invalid",
    )


CASES = [
    # --- authentication and scopes (§2: every data endpoint)
    Case("no_bearer", lambda c: c.api.creator_info(token="-"), 401, "access_token_invalid"),
    Case(
        "unknown_token",
        lambda c: c.api.init_direct(GOOD_SOURCE, token="act.nope"),
        401,
        "access_token_invalid",
    ),
    Case(
        "creator_info_without_video_publish",
        lambda c: c.as_user(scopes=["user.info.basic", "video.upload"]).creator_info(),
        401,
        "scope_not_authorized",
    ),
    Case(
        "direct_init_without_video_publish",
        lambda c: c.as_user(scopes=["video.upload"]).init_direct(GOOD_SOURCE),
        401,
        "scope_not_authorized",
    ),
    Case(
        "inbox_init_without_video_upload",
        lambda c: c.as_user(scopes=["video.publish"]).init_inbox(GOOD_SOURCE),
        401,
        "scope_not_authorized",
    ),
    Case(
        "status_without_either_scope",
        lambda c: c.as_user(scopes=["user.info.basic"]).status("v_pub_file~v2-1.1"),
        401,
        "scope_not_authorized",
    ),
    # --- request body
    Case(
        "form_body_on_init",
        lambda c: _raw(c, INIT, b"a=1", "application/x-www-form-urlencoded"),
        400,
        "invalid_params",
    ),
    Case("malformed_json", lambda c: _raw(c, INIT, b"{nope", "application/json"), 400, "invalid_params"),
    Case(
        "json_array_body",
        lambda c: _raw(c, INIT, b"[]", "application/json; charset=UTF-8"),
        400,
        "invalid_params",
    ),
    Case(
        "docs_spelling_switch",
        lambda c: _raw(c, INIT, b"{nope", "application/json"),
        400,
        "invalid_param",
        {"invalid_param_spelling": "invalid_param"},
    ),
    # --- post_info (§5.1)
    Case(
        "missing_post_info", lambda c: c.api.call(INIT, {"source_info": GOOD_SOURCE}), 400, "invalid_params"
    ),
    Case(
        "missing_privacy_level",
        lambda c: c.api.init_direct(GOOD_SOURCE, {"title": "x"}),
        400,
        "invalid_params",
    ),
    Case(
        "unknown_privacy_level",
        lambda c: c.api.init_direct(GOOD_SOURCE, {"privacy_level": "EVERYONE"}),
        400,
        "invalid_params",
    ),
    Case(
        "title_over_2200_utf16_units",
        # 1100 astral emoji are 2200 UTF-16 units (1100 code points); one more character breaks the limit.
        lambda c: c.api.init_direct(GOOD_SOURCE, {**PUBLIC, "title": "\U0001f600" * 1100 + "x"}),
        400,
        "invalid_params",
    ),
    Case(
        "non_boolean_toggle",
        lambda c: c.api.init_direct(GOOD_SOURCE, {**PUBLIC, "disable_comment": "yes"}),
        400,
        "invalid_params",
    ),
    Case(
        "negative_cover_timestamp",
        lambda c: c.api.init_direct(GOOD_SOURCE, {**PUBLIC, "video_cover_timestamp_ms": -1}),
        400,
        "invalid_params",
    ),
    # --- source_info and the chunk rules (§3)
    Case("missing_source_info", lambda c: c.api.call(INIT, {"post_info": PUBLIC}), 400, "invalid_params"),
    Case("unknown_source", lambda c: c.api.init_direct({"source": "DROPBOX"}), 400, "invalid_params"),
    Case(
        "sizes_as_strings",
        lambda c: c.api.init_direct({**GOOD_SOURCE, "video_size": str(GOOD_SOURCE["video_size"])}),
        400,
        "invalid_params",
    ),
    _bad_plan("count_is_ceil_not_floor", 50_000_123, 10 * MB, 6),
    _bad_plan("count_zero", 50_000_123, 10 * MB, 0),
    _bad_plan("chunk_below_5_mib", 50 * MB, 5 * MB, 10),
    _bad_plan("chunk_above_64_mb", 300 * MB, 65 * MB, 4),
    _bad_plan("small_file_split", 4_194_304, 2_097_152, 2),
    _bad_plan("floor_trap_single_chunk_over_64_mb", 100 * MB, 64 * MB, 1),
    _bad_plan("whole_file_over_64_mb", 64 * MB + 1, 64 * MB + 1, 1),
    _bad_plan("file_over_4_gb", 4_000_000_001, 10 * MB, 400),
    _bad_plan("negative_size", -1, 10 * MB, 0),
    # --- PULL_FROM_URL (§4)
    Case(
        "pull_over_http",
        lambda c: c.api.init_direct(
            {"source": "PULL_FROM_URL", "video_url": "http://media.example.com/v.mp4"}
        ),
        400,
        "invalid_params",
        {"verified_domains": ["example.com"]},
    ),
    Case(
        "pull_from_unverified_domain",
        lambda c: c.api.init_direct({"source": "PULL_FROM_URL", "video_url": "https://cdn.other.net/v.mp4"}),
        403,
        "url_ownership_unverified",
        {"verified_domains": ["example.com"]},
    ),
    Case(
        "pull_from_parent_of_verified_domain",
        lambda c: c.api.init_direct({"source": "PULL_FROM_URL", "video_url": "https://example.com/v.mp4"}),
        403,
        "url_ownership_unverified",
        {"verified_domains": ["static.example.com"]},
    ),
    Case(
        "pull_outside_url_prefix",
        lambda c: c.api.init_inbox(
            {"source": "PULL_FROM_URL", "video_url": "https://example.com/other/v.mp4"}
        ),
        403,
        "url_ownership_unverified",
        {"verified_url_prefixes": ["https://example.com/videos/"]},
    ),
    Case(
        "pull_from_ip_literal",
        lambda c: c.api.init_direct({"source": "PULL_FROM_URL", "video_url": "https://93.184.216.34/v.mp4"}),
        403,
        "url_ownership_unverified",
        {"verified_domains": ["example.com"]},
    ),
    # --- creator policy (§5.2, §7)
    Case(
        "public_account_followers_only",
        lambda c: c.api.init_direct(GOOD_SOURCE, {"privacy_level": "FOLLOWER_OF_CREATOR"}),
        403,
        "privacy_level_option_mismatch",
    ),
    Case(
        "private_account_public_post",
        lambda c: c.as_user(private_account=True).init_direct(GOOD_SOURCE, PUBLIC),
        403,
        "privacy_level_option_mismatch",
    ),
    Case(
        "unaudited_public_account",
        lambda c: c.api.init_direct(GOOD_SOURCE, SELF_ONLY),
        403,
        "unaudited_client_can_only_post_to_private_accounts",
        {"audited": False},
    ),
    Case(
        "unaudited_private_account_not_self_only",
        lambda c: c.as_user(private_account=True).init_direct(
            GOOD_SOURCE, {"privacy_level": "FOLLOWER_OF_CREATOR"}
        ),
        403,
        "unaudited_client_can_only_post_to_private_accounts",
        {"audited": False},
    ),
    Case("unaudited_sixth_creator", _active_user_cap, 403, "reached_active_user_cap", {"audited": False}),
    Case(
        "active_user_cap_creator_info_is_http_200",
        lambda c: _then(lambda: c.api.init_direct(GOOD_SOURCE), lambda: c.as_user("second").creator_info()),
        200,
        "reached_active_user_cap",
        {"active_user_cap": 1},
    ),
    Case(
        "banned_user_init",
        lambda c: c.as_user(banned=True).init_direct(GOOD_SOURCE),
        403,
        "spam_risk_user_banned_from_posting",
    ),
    Case(
        "banned_user_creator_info_is_http_200",
        lambda c: c.as_user(banned=True).creator_info(),
        200,
        "spam_risk_user_banned_from_posting",
    ),
    Case(
        "daily_post_cap",
        lambda c: _repeat(3, lambda: c.api.init_direct(GOOD_SOURCE)),
        403,
        "spam_risk_too_many_posts",
        {"direct_post_daily_cap": 2},
    ),
    Case(
        "daily_post_cap_creator_info_is_http_200",
        lambda c: _then(lambda: c.api.init_direct(GOOD_SOURCE), c.api.creator_info),
        200,
        "spam_risk_too_many_posts",
        {"direct_post_daily_cap": 1},
    ),
    Case(
        "sixth_pending_inbox_share",
        lambda c: _repeat(6, lambda: c.api.init_inbox(GOOD_SOURCE)),
        403,
        "spam_risk_too_many_pending_share",
    ),
    # --- status and cancel (§2, §6)
    Case("status_unknown_publish_id", lambda c: c.api.status("v_pub_file~v2-1.1"), 400, "invalid_publish_id"),
    Case(
        "status_without_publish_id",
        lambda c: c.api.call("/v2/post/publish/status/fetch/", {}),
        400,
        "invalid_publish_id",
    ),
    Case(
        "status_of_other_users_publish",
        _other_users_publish,
        400,
        "token_not_authorized_for_specified_publish_id",
    ),
    Case("cancel_unknown_publish_id", lambda c: c.api.cancel("v_pub_url~v2-1.1"), 400, "invalid_publish_id"),
    Case("cancel_file_upload", _cancel_file_upload, 400, "publish_not_cancellable"),
    # --- rate limits per token, sliding 60 s (§7)
    Case(
        "seventh_init_in_a_minute",
        lambda c: _repeat(7, lambda: c.api.init_inbox(GOOD_SOURCE)),
        429,
        "rate_limit_exceeded",
        {"pending_share_cap": 100},
    ),
    Case(
        "init_limit_shared_by_direct_and_inbox",
        lambda c: _then(
            lambda: _repeat(3, lambda: c.api.init_inbox(GOOD_SOURCE)), lambda: c.api.init_direct(GOOD_SOURCE)
        ),
        429,
        "rate_limit_exceeded",
        {"rate_limit_init": 3},
    ),
    Case("twenty_first_creator_info", lambda c: _repeat(21, c.api.creator_info), 429, "rate_limit_exceeded"),
    Case("thirty_first_status", lambda c: _status_31(c), 429, "rate_limit_exceeded"),
]


async def _status_31(ctx: Ctx) -> httpx.Response:
    pid = (await ctx.api.init_direct(GOOD_SOURCE)).json()["data"]["publish_id"]
    return await _repeat(31, lambda: ctx.api.status(pid))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_sandbox_rejects_violation(case: Case) -> None:
    async with running_sandbox(**FAST, **case.settings) as sb:
        ctx: Ctx | None = None

        async def remember(request: httpx.Request) -> None:
            if ctx is not None:
                ctx.publishes_before_last_call = len(sb.state.publishes)

        async with httpx.AsyncClient(base_url=sb.base_url, event_hooks={"request": [remember]}) as http:
            ctx = Ctx(sb, http, Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"]))
            resp = await case.act(ctx)
        assert (resp.status_code, code(resp)) == (case.status, case.code), resp.text
        error = resp.json()["error"]
        assert error["message"]
        assert error["log_id"]
        if case.message is not None:
            assert error["message"] == case.message
        assert sb.state.stats.violations[case.code] >= 1
        assert len(sb.state.publishes) == ctx.publishes_before_last_call  # a rejection creates nothing
