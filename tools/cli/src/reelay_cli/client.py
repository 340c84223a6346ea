"""ingest's HTTP API as the CLI uses it: one httpx client, and the API's error body as an exception.

Every httpx error is translated here (`raise ... from exc`), so commands see two kinds of failure:
ApiError (the API answered with an error body) and Unreachable (it did not answer at all).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

# Generous: a large file's answer comes only after ingest has stored all of it and Kafka acknowledged.
TIMEOUT = httpx.Timeout(30.0, read=300.0)


class CliError(Exception):
    """A failure the CLI reports in one line (never a traceback)."""

    code: str
    message: str


class ApiError(CliError):
    """The API answered with an error: its HTTP status and ErrorBody `{"error": {code, message}}`."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """The error a response carries; a body that is not an ErrorBody is described, not trusted."""
        try:
            error = response.json()["error"]
            return cls(response.status_code, str(error["code"]), str(error["message"]), error.get("detail"))
        except (ValueError, KeyError, TypeError):
            reason = response.reason_phrase or "error"
            return cls(response.status_code, f"http_{response.status_code}", f"HTTP {reason} (no error body)")


class Unreachable(CliError):
    """The API could not be reached or did not answer (connection refused, DNS, timeout)."""

    def __init__(self, url: str, exc: httpx.HTTPError) -> None:
        reason = str(exc) or type(exc).__name__
        super().__init__(f"cannot reach {url}: {reason}")
        self.code = "connection_failed"
        self.message = f"cannot reach {url}: {reason}"


class ProgressFile(io.BufferedReader):
    """A file that tells `on_read` its position after each read, so that httpx, which streams the
    file part in 64 KiB reads, drives the progress display; the file is never read whole."""

    def __init__(self, path: Path, on_read: Callable[[int], None]) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._on_read = on_read

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self._on_read(self.tell())
        return data


class ReelayApi:
    """The calls the commands make, under `base_url` with the API key as a bearer token."""

    def __init__(self, base_url: str, api_key: str, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "reelay-cli"},
            timeout=TIMEOUT,
            transport=transport,
        )

    def __enter__(self) -> ReelayApi:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(self.base_url, exc) from exc
        if response.is_error:
            raise ApiError.of(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(response.status_code, "bad_response", "the answer is not JSON") from exc

    # ----------------------------------------------------------------------------------- uploads

    def upload_url(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /v1/uploads as JSON (UploadByUrl)."""
        return dict(self._call("POST", "/v1/uploads", json=dict(body)))

    def upload_file(
        self, path: Path, fields: Mapping[str, str], content_type: str, on_read: Callable[[int], None]
    ) -> dict[str, Any]:
        """POST /v1/uploads as multipart/form-data: the text fields first (so ingest can refuse
        before a byte of the video is stored), then the part `file`, streamed from disk."""
        with ProgressFile(path, on_read) as f:
            files = {"file": (path.name, f, content_type)}
            return dict(self._call("POST", "/v1/uploads", data=dict(fields), files=files))

    def upload(self, request_id: str) -> dict[str, Any]:
        """GET /v1/uploads/{request_id} (UploadView)."""
        return dict(self._call("GET", f"/v1/uploads/{_segment(request_id)}"))

    def uploads(self, *, account_id: str | None, state: str | None, limit: int | None) -> dict[str, Any]:
        """GET /v1/uploads (UploadList), newest first."""
        params = {"account_id": account_id, "state": state, "limit": limit}
        return dict(
            self._call("GET", "/v1/uploads", params={k: v for k, v in params.items() if v is not None})
        )

    def cancel(self, request_id: str) -> dict[str, Any]:
        """DELETE /v1/uploads/{request_id} (UploadView)."""
        return dict(self._call("DELETE", f"/v1/uploads/{_segment(request_id)}"))

    # ---------------------------------------------------------------------------------- accounts

    def accounts(self) -> list[dict[str, Any]]:
        """GET /v1/accounts: `items`."""
        return list(self._call("GET", "/v1/accounts").get("items", []))

    def account(self, account_id: str) -> dict[str, Any]:
        """GET /v1/accounts/{account_id} (AccountView)."""
        return dict(self._call("GET", f"/v1/accounts/{_segment(account_id)}"))

    def connect(self, account_id: str, scopes: list[str]) -> dict[str, Any]:
        """POST /v1/accounts/{account_id}/connect: `authorize_url` for the creator to open."""
        body = {"scopes": scopes} if scopes else {}
        return dict(self._call("POST", f"/v1/accounts/{_segment(account_id)}/connect", json=body))

    def disconnect(self, account_id: str) -> dict[str, Any]:
        """DELETE /v1/accounts/{account_id} (AccountView)."""
        return dict(self._call("DELETE", f"/v1/accounts/{_segment(account_id)}"))


def _segment(value: str) -> str:
    # An id is one path segment: a "/" or "?" in it must not reach another route.
    return quote(value, safe="")


def post_info_json(privacy_level: str, title: str | None) -> str:
    """The form's `post_info` field: PostInfo as a JSON string."""
    info: dict[str, str] = {"privacy_level": privacy_level}
    if title is not None:
        info["title"] = title
    return json.dumps(info)


def content_type_of(path: Path) -> str:
    """The media type ingest accepts for the file's extension (it sniffs the bytes as well)."""
    return {".mov": "video/quicktime", ".webm": "video/webm"}.get(
        os.path.splitext(path.name)[1].lower(), "video/mp4"
    )
