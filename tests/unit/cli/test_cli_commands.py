"""Specification of `reelay status`, `uploads`, `cancel` and `accounts ...` against the fake ingest."""

from __future__ import annotations

import json
import sys

import pytest
from reelay_cli.commands import open_in_browser

from tests.unit.cli.cli_fakes import (
    Browser,
    FakeClock,
    FakeIngest,
    account_view,
    json_lines,
    upload_view,
    wiring,
)
from tests.unit.cli.conftest import Run

PATH = ["accepted", "uploading", "uploaded", "processing", "published"]


class TestStatus:
    def test_shows_the_upload_and_exits_0_whatever_its_state(self, run: Run, ingest: FakeIngest) -> None:
        ingest.timelines["r1"] = [
            upload_view("r1", ["accepted", "failed"], detail={"fail_reason": "spam_risk"})
        ]
        result = run("status", "r1")
        assert result.exit_code == 0, result.output
        assert "state:      failed" in result.stdout
        assert "failed  (poller)  fail_reason=spam_risk" in result.stdout

    def test_json_is_the_upload_view(self, run: Run, ingest: FakeIngest) -> None:
        ingest.timelines["r1"] = [upload_view("r1", PATH)]
        result = run("status", "r1", "--json")
        assert json.loads(result.stdout) == upload_view("r1", PATH)

    def test_watch_follows_until_the_end_and_exits_by_the_outcome(self, run: Run, ingest: FakeIngest) -> None:
        ingest.timelines["r1"] = [upload_view("r1", PATH[:2]), upload_view("r1", [*PATH[:3], "failed"])]
        result = run("status", "r1", "--watch", "--json")
        assert result.exit_code == 1
        lines = json_lines(result.stdout)
        assert [line.get("state") for line in lines[:-1]] == [*PATH[:3], "failed"]
        assert lines[-1]["type"] == "result"

    def test_an_unknown_upload_is_the_api_s_404(self, run: Run) -> None:
        result = run("status", "nope")
        assert result.exit_code == 1
        assert "error: unknown_upload:" in result.stderr

    def test_an_id_stays_one_path_segment(self, run: Run, ingest: FakeIngest) -> None:
        run("status", "a/../../accounts")
        assert ingest.requests[0].url.raw_path == b"/v1/uploads/a%2F..%2F..%2Faccounts"


class TestUploads:
    def test_passes_the_filters_as_the_api_s_query_parameters(self, run: Run, ingest: FakeIngest) -> None:
        result = run("uploads", "--account", "acme", "--state", "published", "--limit", "5")
        assert result.exit_code == 0, result.output
        assert dict(ingest.requests[0].url.params) == {
            "account_id": "acme",
            "state": "published",
            "limit": "5",
        }

    def test_lists_newest_first_as_a_table_or_json(self, run: Run, ingest: FakeIngest) -> None:
        ingest.timelines["r1"] = [upload_view("r1", PATH)]
        table = run("uploads")
        assert "r1" in table.stdout
        assert "published" in table.stdout
        listing = json.loads(run("uploads", "--json").stdout)
        assert listing["count"] == 1
        assert listing["items"][0]["request_id"] == "r1"


class TestCancel:
    def test_deletes_the_upload(self, run: Run, ingest: FakeIngest) -> None:
        ingest.timelines["r1"] = [upload_view("r1", ["accepted"])]
        result = run("cancel", "r1")
        assert result.exit_code == 0, result.output
        assert ingest.requests[0].method == "DELETE"
        assert ingest.requests[0].url.path == "/v1/uploads/r1"
        assert result.stdout.strip() == "cancelled r1"


class TestAccounts:
    def test_list_and_show(self, run: Run, ingest: FakeIngest) -> None:
        creator = {"creator_nickname": "Acme", "privacy_level_options": ["SELF_ONLY"]}
        ingest.accounts["acme"] = [account_view("acme", creator_info=creator, extra_field=1)]
        listed = run("accounts", "list")
        assert listed.exit_code == 0, listed.output
        assert "acme" in listed.stdout
        assert "connected" in listed.stdout
        assert json.loads(run("accounts", "list", "--json").stdout)["items"][0]["account_id"] == "acme"
        shown = run("accounts", "show", "acme")
        assert "creator:    Acme" in shown.stdout
        assert "privacy:    SELF_ONLY" in shown.stdout

    def test_show_tolerates_missing_optional_fields(self, run: Run, ingest: FakeIngest) -> None:
        ingest.accounts["bare"] = [{"account_id": "bare", "status": "reauth_required"}]
        result = run("accounts", "show", "bare")
        assert result.exit_code == 0, result.output
        assert "status:     reauth_required" in result.stdout

    def test_disconnect(self, run: Run, ingest: FakeIngest) -> None:
        ingest.accounts["acme"] = [account_view("acme")]
        result = run("accounts", "disconnect", "acme", "--json")
        assert result.exit_code == 0
        assert ingest.requests[0].method == "DELETE"
        assert json.loads(result.stdout)["status"] == "disconnected"

    def test_connect_prints_the_url_and_waits_until_connected(self, run: Run, ingest: FakeIngest) -> None:
        # Not registered before, then registered but not yet usable, then connected.
        browser, clock = Browser(), FakeClock()
        result = run(
            "accounts", "connect", "new", "--scope", "video.upload", wiring_=wiring(ingest, clock, browser)
        )
        assert result.exit_code == 3, "nothing connects it: the wait times out"
        assert "https://tiktok.test/auth?state=s-new" in result.stdout
        assert browser.opened == [], "no terminal: no browser"
        assert json.loads(ingest.bodies[1]) == {"scopes": ["video.upload"]}
        ingest.accounts["new"] = [account_view("new", "reauth_required"), account_view("new")]
        result = run("accounts", "connect", "new", wiring_=wiring(ingest, clock, browser))
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-1] == "new is connected"

    def test_connect_opens_a_browser_on_a_terminal_unless_told_not_to(
        self, run: Run, ingest: FakeIngest
    ) -> None:
        ingest.accounts["acme"] = [account_view("acme", "reauth_required"), account_view("acme")]
        browser = Browser()
        result = run("accounts", "connect", "acme", wiring_=wiring(ingest, browser=browser, terminal=True))
        assert result.exit_code == 0, result.output
        assert browser.opened == ["https://tiktok.test/auth?state=s-acme"]
        ingest.accounts["acme"] = [account_view("acme", "reauth_required"), account_view("acme")]
        quiet = Browser()
        run(
            "accounts",
            "connect",
            "acme",
            "--no-browser",
            wiring_=wiring(ingest, browser=quiet, terminal=True),
        )
        assert quiet.opened == []

    def test_reconnecting_a_connected_account_waits_for_the_new_grant(
        self, run: Run, ingest: FakeIngest
    ) -> None:
        old = account_view("acme")
        renewed = account_view("acme", access_expires_at="2026-12-02T14:00:00Z")
        ingest.accounts["acme"] = [old, old, old, renewed]
        clock = FakeClock()
        result = run("accounts", "connect", "acme", "--json", wiring_=wiring(ingest, clock))
        assert result.exit_code == 0, result.output
        lines = json_lines(result.stdout)
        assert [line["type"] for line in lines] == ["authorize", "result"]
        assert lines[0]["authorize_url"] == "https://tiktok.test/auth?state=s-acme"
        assert lines[1]["account"]["access_expires_at"] == "2026-12-02T14:00:00Z"
        assert clock.slept == [1.0, 1.0]

    def test_connect_without_waiting(self, run: Run, ingest: FakeIngest) -> None:
        result = run("accounts", "connect", "acme", "--no-wait", "--json")
        assert result.exit_code == 0
        assert [line["type"] for line in json_lines(result.stdout)] == ["authorize"]


def test_no_console_browser_is_started_without_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    # webbrowser would fall back to lynx or w3m in the terminal; the URL is printed instead.
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    assert open_in_browser("https://tiktok.test/auth") is False
