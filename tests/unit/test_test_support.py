"""The test doubles share no code with what they imitate: no module of reelay_testing imports
reelay_common.adapters, so a bug in an adapter cannot pass a contract test on both sides. And the
one FakeClock reads the same time every way the code under test asks for it."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import reelay_testing
from reelay_testing.clocks import FakeClock

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


class TestFakeClock:
    def test_its_datetime_and_epoch_views_move_together(self) -> None:
        clock = FakeClock(1_800_000_000.0)
        clock.advance(6.0)
        assert clock.time() == 1_800_000_006.0
        assert clock() == datetime.fromtimestamp(1_800_000_006, UTC)

    def test_a_time_set_as_a_datetime_reads_back_exactly(self) -> None:
        clock = FakeClock()
        due = clock() + timedelta(seconds=2.5, microseconds=7)
        clock.now = due
        assert clock() == due
        assert clock.now.microsecond % 1000 == 7  # set exactly; only the start is cut to milliseconds

    async def test_sleeping_records_the_wait_and_moves_the_clock(self) -> None:
        clock = FakeClock(1000.0)
        await clock.sleep(54.0)
        clock.sleep_blocking(1.5)
        assert clock.sleeps == [54.0, 1.5]
        assert clock.time() == 1055.5
