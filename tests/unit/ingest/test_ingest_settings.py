"""Specification of IngestSettings: env names, defaults that work locally, refusals in prod."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from reelay_common.settings import DEV_API_KEY
from reelay_ingest.settings import IngestSettings

PROD_SECRETS = {
    "REELAY_ENV": "prod",
    "TIKTOK_CLIENT_SECRET": "real-secret",
    "REELAY_TOKEN_ENCRYPTION_KEY": "cmVhbC1rZXktcmVhbC1rZXktcmVhbC1rZXktMzJieXQ=",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith(("INGEST_", "REELAY_")) or name in {"TIKTOK_CLIENT_SECRET"}:
            monkeypatch.delenv(name)
    return monkeypatch


class TestIngestSettings:
    def test_defaults_work_on_a_laptop(self, clean_env: pytest.MonkeyPatch) -> None:
        s = IngestSettings()

        assert (s.host, s.port) == ("127.0.0.1", 8000)
        assert [k.get_secret_value() for k in s.api_keys] == [DEV_API_KEY]
        assert s.max_upload_bytes == 4_000_000_000
        assert (s.allow_private_urls, s.check_creator_info, s.webhook_tolerance_seconds) == (False, True, 300)
        assert s.status_base() is None

    def test_reads_prefixed_env_and_comma_separated_keys(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("INGEST_API_KEYS", " key-a , key-b ,")
        clean_env.setenv("INGEST_PORT", "8123")
        clean_env.setenv("INGEST_PUBLIC_BASE_URL", "https://reelay.example.com/")
        clean_env.setenv("INGEST_MAX_UPLOAD_BYTES", "1000")

        s = IngestSettings()

        assert [k.get_secret_value() for k in s.api_keys] == ["key-a", "key-b"]
        assert s.port == 8123
        assert s.status_base() == "https://reelay.example.com"
        assert s.max_upload_bytes == 1000

    def test_keys_never_show_in_repr(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("INGEST_API_KEYS", "super-secret-key")

        assert "super-secret-key" not in repr(IngestSettings())

    def test_the_dev_key_is_refused_in_prod(self, clean_env: pytest.MonkeyPatch) -> None:
        for name, value in PROD_SECRETS.items():
            clean_env.setenv(name, value)

        with pytest.raises(ValidationError, match="dev key"):
            IngestSettings()

        clean_env.setenv("INGEST_API_KEYS", "a-real-key")
        assert IngestSettings().environment == "prod"

    def test_no_keys_at_all_is_refused(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("INGEST_API_KEYS", " , ")

        with pytest.raises(ValidationError, match="at least one key"):
            IngestSettings()

    def test_a_limit_over_tiktok_s_4_gb_is_refused(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("INGEST_MAX_UPLOAD_BYTES", str(5 * 1024**3))

        with pytest.raises(ValidationError):
            IngestSettings()
