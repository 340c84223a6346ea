"""Specification of `reelay upload`: what it sends, how it shows progress, how --wait ends."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.unit.cli.cli_fakes import (
    FakeClock,
    FakeIngest,
    error,
    json_lines,
    upload_view,
    wiring,
)
from tests.unit.cli.conftest import Run

VIDEO_BYTES = 1_000_000


def video(tmp_path: Path, size: int = VIDEO_BYTES) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"\0" * (size % 256))
    return path


class TestFileUpload:
    def test_streams_the_fields_first_then_the_file_as_multipart(
        self, run: Run, ingest: FakeIngest, tmp_path: Path
    ) -> None:
        path = video(tmp_path)
        result = run("upload", str(path), "--account", "acme", "--privacy", "SELF_ONLY", "--title", "hi")
        assert result.exit_code == 0, result.output
        [request] = ingest.requests
        assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
        body = ingest.bodies[0]
        assert body.index(b'name="account_id"') < body.index(b'name="post_info"') < body.index(b'name="file"')
        assert b'{"privacy_level": "SELF_ONLY", "title": "hi"}' in body
        assert b'filename="clip.mp4"\r\nContent-Type: video/mp4' in body
        assert path.read_bytes() in body, "the file part holds the whole file, unchanged"
        assert int(request.headers["content-length"]) == len(body), "a known length, not chunked"
        assert "accepted req-1" in result.stdout

    def test_without_a_terminal_prints_a_line_per_tenth_each_once(self, run: Run, tmp_path: Path) -> None:
        result = run("upload", str(video(tmp_path)), "--account", "acme")
        assert result.exit_code == 0, result.output
        lines = [line for line in result.stderr.splitlines() if line.startswith("uploading clip.mp4:")]
        percents = [int(line.split()[2].rstrip("%")) for line in lines]
        # httpx reads the file in 64 KiB pieces: the progress moves with them, it is not read at once.
        assert percents == list(range(0, 101, 10))
        assert lines[-1].endswith(f"({VIDEO_BYTES} of {VIDEO_BYTES} bytes)")
        assert "\x1b[" not in result.stderr, "no terminal control sequences in a log"

    def test_on_a_terminal_draws_rich_s_bar_with_bytes_and_rate(
        self, run: Run, ingest: FakeIngest, tmp_path: Path
    ) -> None:
        result = run(
            "upload", str(video(tmp_path)), "--account", "acme", wiring_=wiring(ingest, terminal=True)
        )
        assert result.exit_code == 0, result.output
        assert "uploading clip.mp4:" not in result.stderr
        assert "1.0/1.0 MB" in result.stderr
        assert "\x1b[" in result.stderr, "drawn with terminal control sequences"

    def test_an_inbox_upload_sends_no_post_info(self, run: Run, ingest: FakeIngest, tmp_path: Path) -> None:
        result = run("upload", str(video(tmp_path)), "--account", "acme", "--inbox")
        assert result.exit_code == 0, result.output
        assert b"\r\n\r\ninbox\r\n" in ingest.bodies[0]
        assert b'name="post_info"' not in ingest.bodies[0]

    def test_a_directory_is_a_usage_error(self, run: Run, ingest: FakeIngest, tmp_path: Path) -> None:
        result = run("upload", str(tmp_path), "--account", "acme")
        assert result.exit_code == 2
        assert "not a regular file" in result.stderr
        assert ingest.requests == []

    def test_a_missing_file_is_a_usage_error(self, run: Run, ingest: FakeIngest, tmp_path: Path) -> None:
        result = run("upload", str(tmp_path / "nope.mp4"), "--account", "acme")
        assert result.exit_code == 2
        assert "no such file" in result.stderr
        assert ingest.requests == []


class TestUrlUpload:
    def test_sends_upload_by_url_as_json(self, run: Run, ingest: FakeIngest) -> None:
        result = run(
            "upload",
            "https://cdn.example.com/v.mp4",
            "--account",
            "acme",
            "--privacy",
            "FOLLOWER_OF_CREATOR",
            "--title",
            "launch",
            "--request-id",
            "r-42",
            "--json",
        )
        assert result.exit_code == 0, result.output
        assert json.loads(ingest.bodies[0]) == {
            "account_id": "acme",
            "mode": "direct",
            "video_url": "https://cdn.example.com/v.mp4",
            "post_info": {"privacy_level": "FOLLOWER_OF_CREATOR", "title": "launch"},
            "request_id": "r-42",
        }
        assert json.loads(result.stdout)["request_id"] == "r-42", "--json: the 202 answer, alone"

    def test_direct_posts_default_to_self_only(self, run: Run, ingest: FakeIngest) -> None:
        assert run("upload", "http://cdn.example.com/v.mp4", "-a", "acme").exit_code == 0
        assert json.loads(ingest.bodies[0])["post_info"] == {"privacy_level": "SELF_ONLY"}

    def test_inbox_with_a_privacy_level_is_a_usage_error(self, run: Run, ingest: FakeIngest) -> None:
        result = run(
            "upload", "https://cdn.example.com/v.mp4", "-a", "acme", "--inbox", "--privacy", "SELF_ONLY"
        )
        assert result.exit_code == 2
        assert "--inbox" in result.stderr
        assert ingest.requests == []

    def test_other_schemes_are_a_usage_error(self, run: Run, ingest: FakeIngest) -> None:
        result = run("upload", "ftp://cdn.example.com/v.mp4", "-a", "acme")
        assert result.exit_code == 2
        assert ingest.requests == []

    def test_an_unknown_privacy_level_is_a_usage_error(self, run: Run, ingest: FakeIngest) -> None:
        result = run("upload", "https://cdn.example.com/v.mp4", "-a", "acme", "--privacy", "FRIENDS")
        assert result.exit_code == 2
        assert ingest.requests == []


def scripted(ingest: FakeIngest, *views: dict[str, object] | httpx.Response) -> None:
    ingest.timelines["req-1"] = list(views)


PATH = ["accepted", "uploading", "uploaded", "processing", "published"]


class TestWait:
    def test_prints_each_state_once_and_exits_0_when_published(self, run: Run, ingest: FakeIngest) -> None:
        scripted(
            ingest,
            upload_view("req-1", PATH[:1]),
            upload_view("req-1", PATH[:1]),  # no change between two polls
            upload_view("req-1", PATH[:3]),  # two changes between two polls
            upload_view("req-1", PATH[:4]),
            upload_view("req-1", PATH),
        )
        clock = FakeClock()
        result = run("upload", "https://x.test/v.mp4", "-a", "acme", "--wait", wiring_=wiring(ingest, clock))
        assert result.exit_code == 0, result.output
        states = [line.split()[1] for line in result.stdout.splitlines() if line[:2].isdigit()]
        assert states == PATH
        assert result.stdout.splitlines()[-1] == "published: post 7000"
        assert clock.slept == [1.0] * 4

    def test_an_inbox_upload_succeeds_when_delivered(self, run: Run, ingest: FakeIngest) -> None:
        scripted(ingest, upload_view("req-1", ["accepted", "uploading", "inbox_delivered"], mode="inbox"))
        result = run("upload", "https://x.test/v.mp4", "-a", "acme", "--inbox", "--wait")
        assert result.exit_code == 0, result.output

    def test_exits_1_with_tiktok_s_reason_when_failed(self, run: Run, ingest: FakeIngest) -> None:
        failed = upload_view(
            "req-1", ["accepted", "uploading", "failed"], detail={"fail_reason": "file_format"}
        )
        scripted(ingest, failed)
        result = run("upload", "https://x.test/v.mp4", "-a", "acme", "--wait")
        assert result.exit_code == 1
        assert "the upload ended failed: fail_reason=file_format" in result.stderr

    def test_exits_3_when_unconfirmed(self, run: Run, ingest: FakeIngest) -> None:
        scripted(ingest, upload_view("req-1", ["accepted", "uploading", "uploaded", "unconfirmed"]))
        assert run("upload", "https://x.test/v.mp4", "-a", "acme", "--wait").exit_code == 3

    def test_exits_3_when_cancelled(self, run: Run, ingest: FakeIngest) -> None:
        scripted(ingest, upload_view("req-1", ["accepted", "cancelled"]))
        assert run("upload", "https://x.test/v.mp4", "-a", "acme", "--wait").exit_code == 3

    def test_exits_3_when_the_timeout_passes(self, run: Run, ingest: FakeIngest) -> None:
        scripted(ingest, upload_view("req-1", ["accepted", "uploading"]))
        clock = FakeClock()
        result = run(
            "upload",
            "https://x.test/v.mp4",
            "-a",
            "acme",
            "--wait",
            "--timeout",
            "5",
            wiring_=wiring(ingest, clock),
        )
        assert result.exit_code == 3
        assert "gave up waiting after 5 s; the upload is uploading" in result.stderr
        assert sum(clock.slept) == 5

    def test_ctrl_c_stops_following_only_and_exits_130(self, run: Run, ingest: FakeIngest) -> None:
        scripted(ingest, upload_view("req-1", ["accepted", "uploading"]))

        def interrupted(seconds: float) -> None:
            raise KeyboardInterrupt

        clock = FakeClock()
        clock.sleep = interrupted  # type: ignore[method-assign]  # the user presses Ctrl-C while it waits
        result = run("upload", "https://x.test/v.mp4", "-a", "acme", "--wait", wiring_=wiring(ingest, clock))
        assert result.exit_code == 130
        assert "the upload goes on (reelay status req-1 --watch)" in result.stderr
        assert [r.method for r in ingest.requests] == ["POST", "GET"], "nothing is cancelled"

    def test_rides_out_an_ingest_restart(self, run: Run, ingest: FakeIngest) -> None:
        scripted(
            ingest,
            error(503, "unavailable", "restarting"),
            upload_view("req-1", PATH),
        )
        assert run("upload", "https://x.test/v.mp4", "-a", "acme", "--wait").exit_code == 0

    def test_json_prints_json_lines_only(self, run: Run, ingest: FakeIngest) -> None:
        scripted(ingest, upload_view("req-1", PATH[:2]), upload_view("req-1", PATH))
        result = run("upload", "https://x.test/v.mp4", "-a", "acme", "--wait", "--json")
        assert result.exit_code == 0, result.output
        lines = json_lines(result.stdout)
        assert [line["type"] for line in lines] == ["accepted"] + ["state"] * 5 + ["result"]
        assert [line["state"] for line in lines[1:-1]] == PATH
        assert lines[-1]["exit_code"] == 0
        assert lines[-1]["timed_out"] is False
        assert lines[-1]["upload"]["state"] == "published"
        assert result.stderr == ""
