"""Specification of how `reelay` fails: the API's code and message, one line, the right exit code."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
from reelay_cli.commands import Wiring

from tests.unit.cli.cli_fakes import BASE, FakeIngest, error
from tests.unit.cli.conftest import Run


class TestApiErrors:
    def test_prints_the_api_s_code_and_message_and_exits_1(self, run: Run) -> None:
        result = run("upload", "https://x.test/v.mp4", "--account", "nobody")
        assert result.exit_code == 1
        assert (
            result.stderr.strip() == "error: unknown_account: account 'nobody' is not registered (HTTP 404)"
        )
        assert result.stdout == ""

    def test_a_refused_file_upload_prints_the_code_too(self, run: Run, tmp_path: Path) -> None:
        path = tmp_path / "v.mp4"
        path.write_bytes(b"\0" * 1000)
        result = run("upload", str(path), "--account", "nobody")
        assert result.exit_code == 1
        assert "error: unknown_account:" in result.stderr

    def test_lists_each_field_of_a_validation_error(self, run: Run, ingest: FakeIngest) -> None:
        ingest.refuse = error(
            422,
            "validation_failed",
            "the request does not match the schema",
            [{"field": "body.post_info.title", "message": "title is too long", "type": "value_error"}],
        )
        result = run("upload", "https://x.test/v.mp4", "-a", "acme")
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            "error: validation_failed: the request does not match the schema (HTTP 422)",
            "  body.post_info.title: title is too long",
        ]

    def test_json_prints_the_error_body_on_stdout(self, run: Run, ingest: FakeIngest) -> None:
        ingest.refuse = error(409, "not_cancellable", "the upload is uploading", {"state": "uploading"})
        result = run("cancel", "req-1", "--json")
        assert result.exit_code == 1
        assert json.loads(result.stdout) == {
            "error": {
                "code": "not_cancellable",
                "message": "the upload is uploading",
                "detail": {"state": "uploading"},
            },
            "http_status": 409,
        }

    def test_a_wrong_api_key_is_the_api_s_401(self, run: Run) -> None:
        result = run("uploads", "--api-key", "wrong")
        assert result.exit_code == 1
        assert "error: unauthorized: the API key is not valid" in result.stderr

    def test_an_answer_without_an_error_body_is_described(self, run: Run, ingest: FakeIngest) -> None:
        ingest.refuse = httpx.Response(502, text="<html>bad gateway</html>")
        result = run("status", "req-1")
        assert result.exit_code == 1
        assert "error: http_502:" in result.stderr

    def test_markup_in_a_message_is_printed_as_it_is(self, run: Run, ingest: FakeIngest) -> None:
        ingest.refuse = error(422, "invalid_input", "expected [bold]one[/bold] of [a, b]")
        result = run("status", "req-1")
        assert "expected [bold]one[/bold] of [a, b]" in result.stderr


class TestUnreachable:
    def test_a_refused_connection_is_one_line_and_exit_1(self, run: Run) -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

        result = run("status", "req-1", wiring_=Wiring(transport=httpx.MockTransport(refuse)))
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            f"error: connection_failed: cannot reach {BASE}: [Errno 111] Connection refused"
        ]

    def test_a_real_closed_port_is_one_line_too(self, run: Run) -> None:
        # No transport injected: the real httpx against a loopback port nothing listens on.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        result = run("status", "req-1", "--url", f"http://127.0.0.1:{port}", wiring_=Wiring())
        assert result.exit_code == 1
        assert len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith(f"error: connection_failed: cannot reach http://127.0.0.1:{port}")


class TestConfiguration:
    def test_a_missing_url_is_a_usage_error(self, run: Run, ingest: FakeIngest) -> None:
        result = run("uploads", env={"REELAY_URL": None})
        assert result.exit_code == 2
        assert "REELAY_URL" in result.stderr
        assert ingest.requests == []

    def test_a_missing_api_key_is_a_usage_error(self, run: Run, ingest: FakeIngest) -> None:
        result = run("uploads", env={"REELAY_API_KEY": None})
        assert result.exit_code == 2
        assert "REELAY_API_KEY" in result.stderr

    def test_a_url_that_is_not_http_is_a_usage_error(self, run: Run) -> None:
        assert run("uploads", "--url", "ingest:8000").exit_code == 2

    def test_flags_win_over_the_environment(self, run: Run, ingest: FakeIngest) -> None:
        result = run(
            "uploads",
            "--url",
            "http://flag.test",
            "--api-key",
            "unit-key",
            env={"REELAY_URL": "http://env.test", "REELAY_API_KEY": "env-key"},
        )
        assert result.exit_code == 0, result.output
        [request] = ingest.requests
        assert request.url.host == "flag.test"
        assert request.headers["authorization"] == "Bearer unit-key"

    def test_the_environment_is_used_without_flags(self, run: Run, ingest: FakeIngest) -> None:
        assert run("uploads").exit_code == 0
        assert ingest.requests[0].url.host == "ingest.test"


class TestUsage:
    @pytest.mark.parametrize(
        "args",
        [
            ["upload"],  # no source
            ["upload", "https://x.test/v.mp4"],  # no --account
            ["uploads", "--limit", "0"],
            ["uploads", "--limit", "501"],
            ["uploads", "--state", "done"],
            ["status"],
            ["upload", "https://x.test/v.mp4", "-a", "acme", "--timeout", "-1"],
            ["frobnicate"],
            ["accounts", "connect"],
        ],
    )
    def test_bad_flags_exit_2_and_call_nothing(self, run: Run, ingest: FakeIngest, args: list[str]) -> None:
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert ingest.requests == []
        assert "Traceback" not in result.output

    def test_help_documents_the_exit_codes_and_the_configuration(self, run: Run) -> None:
        result = run("--help")
        assert result.exit_code == 0
        for text in ("Exit codes", "0: published", "1: the upload failed", "2: usage", "3: unconfirmed"):
            assert text in result.stdout
        assert "REELAY_URL" in result.stdout
        assert "REELAY_API_KEY" in result.stdout
