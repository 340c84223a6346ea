"""Settings come from SANDBOX_* variables, faults included."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from tiktok_sandbox.settings import SandboxSettings


class TestSettings:
    def test_defaults_mirror_tiktok(self) -> None:
        s = SandboxSettings(_env_file=None)
        assert (s.host, s.port, s.client_key) == ("127.0.0.1", 8100, "dev-client-key")
        assert s.client_secret.get_secret_value() == "dev-client-secret"
        assert s.upload_url_ttl_seconds == 3600
        assert (s.rate_limit_init, s.rate_limit_creator_info, s.rate_limit_status) == (6, 20, 30)
        assert (s.direct_post_daily_cap, s.pending_share_cap) == (15, 5)
        assert s.invalid_param_spelling == "invalid_params"
        assert s.chunk_rules == "safe"

    def test_reads_env_with_faults_as_json_and_lists_comma_separated(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SANDBOX_PORT", "9999")
        monkeypatch.setenv(
            "SANDBOX_FAULTS", '{"seed": 1, "put_error_rate": 0.1, "rate_limit_burst": {"video_init": 2}}'
        )
        monkeypatch.setenv("SANDBOX_VERIFIED_DOMAINS", "example.com, static.example.org")
        monkeypatch.setenv("SANDBOX_VERIFIED_URL_PREFIXES", '["https://example.net/videos/"]')
        s = SandboxSettings()
        assert s.port == 9999
        assert s.faults.seed == 1
        assert s.faults.rate_limit_burst == {"video_init": 2}
        assert s.verified_domains == ["example.com", "static.example.org"]
        assert s.verified_url_prefixes == ["https://example.net/videos/"]

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("SANDBOX_FAULTS", '{"put_error_rate": 2}'),
            ("SANDBOX_VERIFIED_URL_PREFIXES", "http://example.com/videos/"),
            ("SANDBOX_VERIFIED_URL_PREFIXES", "https://example.com/videos"),
            ("SANDBOX_CHUNK_RULES", "lenient"),
        ],
    )
    def test_bad_values_are_refused(self, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError):
            SandboxSettings()
