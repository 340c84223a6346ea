"""The README's configuration table names every setting the services read (and the sandbox's its own)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings
from reelay_common.settings import CommonSettings
from reelay_ingest.settings import IngestSettings
from reelay_status_poller.settings import PollerSettings
from reelay_uploader.settings import UploaderSettings
from tiktok_sandbox.settings import SandboxSettings

ROOT = Path(__file__).resolve().parents[2]


def env_names(settings: type[BaseSettings]) -> list[str]:
    """The environment variable each field of `settings` is read from."""
    prefix = str(settings.model_config.get("env_prefix") or "")
    names = []
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        names.append(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


class TestReadme:
    @pytest.mark.parametrize("settings", [CommonSettings, IngestSettings, UploaderSettings, PollerSettings])
    def test_documents_every_service_setting(self, settings: type[BaseSettings]) -> None:
        readme = (ROOT / "README.md").read_text()
        missing = [n for n in env_names(settings) if f"`{n}`" not in readme]
        assert not missing, f"README.md's configuration table lacks {missing}"

    def test_the_sandbox_readme_documents_every_sandbox_setting(self) -> None:
        readme = (ROOT / "tools" / "tiktok-sandbox" / "README.md").read_text()
        missing = [n for n in env_names(SandboxSettings) if n.removeprefix("SANDBOX_") not in readme]
        assert not missing, f"tools/tiktok-sandbox/README.md lacks {missing}"

    def test_starts_with_the_two_commands(self) -> None:
        head = (ROOT / "README.md").read_text().split("\n## ")[0]
        assert "make up" in head
        assert "make test" in head
