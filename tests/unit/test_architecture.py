"""The repository stands alone: docs/architecture.md exists, is linked, covers the public names, and
every citation in code and docs resolves to one of its sections, never to a file outside the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from reelay_common.domain.messages import (
    TOPIC_PUBLISH_EVENTS,
    TOPIC_PUBLISH_STATUS,
    TOPIC_UPLOAD_REQUESTED,
    dlq_topic,
)
from reelay_common.domain.states import UploadState
from reelay_ingest.account_routes import accounts, oauth_callback
from reelay_ingest.routes import api, hooks, ops

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
SCANNED = ["libs", "services", "tools", "tests", "scripts", "bench", "docs", "deploy", "schemas"]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".yaml", ".yml", ".json", ".txt", ".cfg", ".ini"}

# Files that were handed to the developers beside the repo, never part of it. The names are split
# so that this test's own source does not match them.
OUTSIDE = re.compile(
    "|".join(
        [
            r"ARCHITECTURE" + r"\.md",
            r"STYLE" + r"\.md",
            r"\bSTYLE" + r" (habit )?\d",
            r"tiktok-content-posting-api" + r"\.md",
            r"local-infra" + r"\.md",
            r"(\.\./)+shared" + r"/",
            r"/work/" + r"shared",
        ]
    )
)
SECTION_CITATION = re.compile(r'docs/architecture\.md, "([^"]+)"')
PARAGRAPH = re.compile(r"§(\d+(?:\.\d+)?)")


def repo_text_files() -> list[Path]:
    """Every text file of the repo that code or docs live in (no caches, no virtualenvs)."""
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for top in SCANNED:
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def headings() -> list[str]:
    return [
        line.lstrip("#").strip() for line in ARCHITECTURE.read_text().splitlines() if line.startswith("#")
    ]


def section(title: str) -> str:
    """The text of the `## title` section of docs/architecture.md, up to the next `## `."""
    text = ARCHITECTURE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


class TestTheRepoStandsAlone:
    def test_no_file_cites_a_document_outside_the_repo(self) -> None:
        found = [
            f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in repo_text_files()
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
            if OUTSIDE.search(line)
        ]
        assert not found, "cite docs/architecture.md instead:\n" + "\n".join(found)

    @pytest.mark.parametrize("page", ["README.md", "docs/design.md"])
    def test_architecture_is_linked_from(self, page: str) -> None:
        link = "docs/architecture.md" if page == "README.md" else "architecture.md"
        assert f"]({link}" in (ROOT / page).read_text()

    def test_every_section_cited_by_name_exists(self) -> None:
        names = set(headings())
        cited = {
            f"{path.relative_to(ROOT)}: {title}"
            for path in repo_text_files()
            for title in SECTION_CITATION.findall(path.read_text(errors="replace"))
            if title not in names
        }
        assert not cited, f"citations of sections docs/architecture.md does not have: {sorted(cited)}"

    def test_every_numbered_paragraph_cited_exists_in_the_tiktok_section(self) -> None:
        # Code and tests cite the TikTok reference by paragraph (§3.1); each must be a heading there.
        have = {m.group(1) for h in headings() for m in [PARAGRAPH.match(h)] if m}
        cited = {
            f"§{number}"
            for path in repo_text_files()
            if path != ARCHITECTURE
            for number in PARAGRAPH.findall(path.read_text(errors="replace"))
            if number not in have
        }
        assert not cited, f"docs/architecture.md's TikTok section lacks {sorted(cited)}"


class TestTheContractIsDocumented:
    def test_every_topic(self) -> None:
        contract = section("Public contract")
        for topic in (TOPIC_UPLOAD_REQUESTED, TOPIC_PUBLISH_EVENTS, TOPIC_PUBLISH_STATUS):
            assert f"`{topic}`" in contract
        assert f"`{dlq_topic('<topic>')}`" in contract

    def test_every_state(self) -> None:
        contract = section("Public contract")
        missing = [state.value for state in UploadState if state.value not in contract]
        assert not missing

    def test_every_route_of_ingest(self) -> None:
        contract = section("Public contract")
        routers = (api, hooks, ops, accounts, oauth_callback)
        paths = {r.path for router in routers for r in router.routes if isinstance(r, APIRoute)}
        assert paths
        missing = sorted(p for p in paths if p not in contract)
        assert not missing, f"docs/architecture.md's public contract lacks {missing}"

    def test_ten_promises(self) -> None:
        promises = re.findall(r"^(\d+)\. \*\*", section("Promises"), flags=re.MULTILINE)
        assert promises == [str(n) for n in range(1, 11)]
