"""Scoped keys: two tenants' equal ids never meet; the default tenant's keys are the ids themselves."""

from __future__ import annotations

import pytest
from reelay_common.domain.tenancy import DEFAULT_TENANT, check_tenant_id, scoped, split_scoped


def test_default_tenant_keys_are_the_ids_themselves() -> None:
    assert scoped(DEFAULT_TENANT, "req-1") == "req-1"
    assert split_scoped("req-1") == (DEFAULT_TENANT, "req-1")


def test_equal_ids_of_two_tenants_get_different_keys_that_split_back() -> None:
    a, b = scoped("team-a", "main:1"), scoped("team-b", "main:1")
    assert a != b
    assert split_scoped(a) == ("team-a", "main:1")
    assert split_scoped(b) == ("team-b", "main:1")


@pytest.mark.parametrize("bad", ["", "Team", "-a", "a_b", "a" * 41, "a~b"])
def test_a_bad_tenant_id_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="tenant id"):
        check_tenant_id(bad)


def test_an_id_holding_the_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        scoped("team-a", "x~y")
