"""configure_logging: one JSON object per line, context merged, secrets never written."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from reelay_common.logging import bind_learned, configure_logging, get_logger, unit_of_work


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class TestJsonLogs:
    def test_writes_one_json_object_per_event_with_level_time_and_logger(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("info", "json")
        get_logger("reelay.test").info("chunk_uploaded", bytes=10)
        (entry,) = lines(capsys)
        assert (entry["event"], entry["level"], entry["logger"], entry["bytes"]) == (
            "chunk_uploaded",
            "info",
            "reelay.test",
            10,
        )
        assert entry["timestamp"].startswith("20")
        assert entry["timestamp"].endswith("Z")

    def test_merges_context_bound_for_the_unit_of_work(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging("info", "json")
        log = get_logger("reelay.test")
        with structlog.contextvars.bound_contextvars(request_id="req-1", account_id="acct-1"):
            log.info("inside")
        log.info("outside")
        inside, outside = lines(capsys)
        assert (inside["request_id"], inside["account_id"]) == ("req-1", "acct-1")
        assert "request_id" not in outside

    def test_a_unit_of_work_carries_what_is_learnt_in_it_and_ends_with_it(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("info", "json")
        log = get_logger("reelay.test")
        with structlog.contextvars.bound_contextvars(service="uploader"):
            with unit_of_work(topic="t", offset=3):
                bind_learned(publish_id="p-1")
                log.info("inside")
            log.info("after")
        inside, after = lines(capsys)
        assert (inside["topic"], inside["offset"], inside["publish_id"]) == ("t", 3, "p-1")
        assert after["service"] == "uploader"  # what was bound outside the unit stays
        assert not {"topic", "offset", "publish_id"} & set(after)

    def test_never_writes_token_or_secret_values(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging("info", "json")
        get_logger().info(
            "token_refreshed",
            access_token="act.SECRET1",
            refresh_token="rft.SECRET2",
            client_secret="SECRET3",
            authorization="Bearer SECRET4",
            token_version=3,
        )
        out = capsys.readouterr().out
        assert "SECRET" not in out
        entry = json.loads(out)
        assert entry["access_token"] == "[redacted]"
        assert entry["token_version"] == 3

    def test_routes_library_warnings_through_the_same_renderer_and_drops_their_info(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("debug", "json")
        logging.getLogger("aiokafka.consumer").info("chatty")
        logging.getLogger("pymongo.topology").warning("server %s is down", "db1")
        (entry,) = lines(capsys)
        assert (entry["event"], entry["level"], entry["logger"]) == (
            "server db1 is down",
            "warning",
            "pymongo.topology",
        )

    def test_drops_events_below_the_level(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging("warning", "json")
        log = get_logger("reelay.test")
        log.info("quiet")
        log.warning("loud")
        assert [e["event"] for e in lines(capsys)] == ["loud"]

    def test_renders_exceptions_as_structured_data(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging("info", "json")
        try:
            raise KeyError("missing")
        except KeyError:
            get_logger().exception("handler_crashed")
        (entry,) = lines(capsys)
        assert entry["exception"][0]["exc_type"] == "KeyError"


class TestConfiguration:
    def test_console_format_is_not_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging("info", "console")
        get_logger().info("hello", n=1)
        out = capsys.readouterr().out
        assert "hello" in out
        with pytest.raises(json.JSONDecodeError):
            json.loads(out)

    def test_refuses_an_unknown_level(self) -> None:
        with pytest.raises(ValueError, match="unknown log level 'loud'"):
            configure_logging("loud")
