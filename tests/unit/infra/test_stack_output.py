"""Specification of what `make up` prints for people and scripts, and of the demo's inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from reelay_dev import config as c
from reelay_dev.demo import DemoError, external_tokens, format_entry, new_entries
from reelay_dev.orchestrate import env_flag, exports_for_tests, summary_block


def cfg_from(env: dict[str, str]) -> c.StackConfig:
    return c.StackConfig.from_env(Path("/repo"), env, python="py")


class TestSummaryBlock:
    def test_names_ingest_key_and_account_one_per_line(self) -> None:
        block = summary_block(cfg_from({"INGEST_PORT": "8500"}), "demo")
        assert block.splitlines() == [
            "Ingest:     http://127.0.0.1:8500",
            "API key:    dev-api-key",
            "Account id: demo",
        ]

    def test_names_the_dev_tenant_and_its_key_when_make_up_made_one(self) -> None:
        block = summary_block(cfg_from({}), "demo", tenant_key="rly_0123456789abcdef_secret")
        parsed = {k: v.strip() for k, v in (line.split(":", 1) for line in block.splitlines())}
        assert parsed == {
            "Ingest": "http://127.0.0.1:8000",
            "API key": "dev-api-key",
            "Tenant": "dev",
            "Tenant key": "rly_0123456789abcdef_secret",
            "Account id": "demo",
        }

    def test_leaves_out_the_account_when_the_demo_made_none(self) -> None:
        assert "Account id" not in summary_block(cfg_from({}), None)

    def test_lines_parse_as_label_colon_value(self) -> None:
        block = summary_block(cfg_from({}), "demo")
        parsed = dict(line.split(":", 1) for line in block.splitlines())
        assert {k: v.strip() for k, v in parsed.items()} == {
            "Ingest": "http://127.0.0.1:8000",
            "API key": "dev-api-key",
            "Account id": "demo",
        }


class TestTestInfraExports:
    def test_exports_only_what_it_started(self, tmp_path: Path) -> None:
        cfg = c.StackConfig.for_tests(Path("/repo"), tmp_path, {}, python="py")
        assert exports_for_tests(cfg, kafka=True, mongo=True).splitlines() == [
            "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:29092",
            "export MONGODB_URI=mongodb://127.0.0.1:27217",
        ]
        assert (
            exports_for_tests(cfg, kafka=False, mongo=True) == "export MONGODB_URI=mongodb://127.0.0.1:27217"
        )


class TestDemoTokens:
    def test_none_given_means_use_the_sandbox(self) -> None:
        assert external_tokens({}) is None

    def test_all_three_given_are_used(self) -> None:
        tokens = external_tokens({"DEMO_OPEN_ID": "o", "DEMO_ACCESS_TOKEN": "a", "DEMO_REFRESH_TOKEN": "r"})
        assert tokens is not None
        assert (tokens.open_id, tokens.access_token, tokens.refresh_token) == ("o", "a", "r")
        assert tokens.expires_in > 0
        assert "video.publish" in tokens.scope

    def test_half_a_set_is_refused_naming_what_is_missing(self) -> None:
        with pytest.raises(DemoError, match="missing: DEMO_ACCESS_TOKEN, DEMO_REFRESH_TOKEN"):
            external_tokens({"DEMO_OPEN_ID": "o"})

    def test_lifetimes_must_be_whole_seconds(self) -> None:
        env = {
            "DEMO_OPEN_ID": "o",
            "DEMO_ACCESS_TOKEN": "a",
            "DEMO_REFRESH_TOKEN": "r",
            "DEMO_EXPIRES_IN": "soon",
        }
        with pytest.raises(DemoError, match="whole seconds"):
            external_tokens(env)


class TestDemoProgress:
    def test_a_history_entry_shows_state_source_time_and_detail(self) -> None:
        line = format_entry(
            {"state": "failed", "source": "poller", "detail": {"fail_reason": "spam_risk", "log_id": None}},
            started=10.0,
            now=12.25,
        )
        assert line.split() == ["+2.2s", "failed", "by", "poller", "fail_reason=spam_risk"]

    def test_only_entries_not_yet_printed_are_new(self) -> None:
        history = [{"state": "accepted"}, {"state": "uploading"}, {"state": "uploaded"}]
        assert new_entries(history, 1) == [{"state": "uploading"}, {"state": "uploaded"}]
        assert new_entries(history, 3) == []


class TestEnvFlag:
    @pytest.mark.parametrize(("raw", "expected"), [("1", True), ("yes", True), ("0", False), ("off", False)])
    def test_reads_yes_and_no(self, raw: str, expected: bool) -> None:
        assert env_flag({"DEMO": raw}, "DEMO", not expected) is expected

    def test_unset_is_the_default(self) -> None:
        assert env_flag({}, "DEMO", True) is True

    def test_anything_else_is_refused(self) -> None:
        with pytest.raises(c.ConfigError, match="DEMO must be"):
            env_flag({"DEMO": "maybe"}, "DEMO", True)
