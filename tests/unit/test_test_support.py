"""The test doubles share no code with what they imitate: no module of reelay_testing imports
reelay_common.adapters, so a bug in an adapter cannot pass a contract test on both sides."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import reelay_testing

PACKAGE = Path(reelay_testing.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))


def imported_modules(source: str) -> set[str]:
    """Every module a source file imports, at any depth of its syntax tree (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def adapter_imports(source: str) -> set[str]:
    return {
        m
        for m in imported_modules(source)
        if m == "reelay_common.adapters" or m.startswith("reelay_common.adapters.")
    }


class TestTheRule:
    def test_the_package_has_modules_to_check(self) -> None:
        names = {p.stem for p in MODULES}
        assert {"stores", "publisher", "tokens", "blobs", "waiting", "kafka", "clocks"} <= names

    @pytest.mark.parametrize("module", MODULES, ids=lambda p: p.stem)
    def test_no_module_imports_the_adapters(self, module: Path) -> None:
        assert adapter_imports(module.read_text()) == set()

    @pytest.mark.parametrize("module", MODULES, ids=lambda p: p.stem)
    def test_of_reelay_common_only_the_domain_and_the_ports_are_used(self, module: Path) -> None:
        used = {m for m in imported_modules(module.read_text()) if m.split(".")[0] == "reelay_common"}
        allowed = {m for m in used if m.startswith(("reelay_common.domain", "reelay_common.ports"))}
        assert used == allowed

    @pytest.mark.parametrize(
        "source",
        [
            "from reelay_common.adapters.mongo.uploads import check_settable",
            "import reelay_common.adapters.mongo.client",
            "from reelay_common.adapters import mongo",
            "def f():\n    from reelay_common.adapters.mongo.client import bson_now\n",
        ],
    )
    def test_the_check_sees_every_form_of_import(self, source: str) -> None:
        assert adapter_imports(source)
