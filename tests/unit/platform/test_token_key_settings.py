"""Specification of the token keys in CommonSettings: REELAY_TOKEN_ENCRYPTION_KEYS (several, the
first encrypts) beside REELAY_TOKEN_ENCRYPTION_KEY (one), malformed keys named but never echoed."""

from __future__ import annotations

import os

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.settings import DEV_TOKEN_KEY, CommonSettings

NEW = Fernet.generate_key().decode()
OLD = Fernet.generate_key().decode()
MALFORMED = "this-is-not-a-fernet-key-but-it-is-secret"  # a test value


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("REELAY_") or name == "TIKTOK_CLIENT_SECRET":
            monkeypatch.delenv(name)
    return monkeypatch


def keys_of(settings: CommonSettings) -> list[str]:
    return [k.get_secret_value() for k in settings.token_keys()]


def refusal(env: pytest.MonkeyPatch, **values: str) -> str:
    """The settings error for `values`; it must never contain a key that was given."""
    for name, value in values.items():
        env.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        CommonSettings()
    text = str(info.value)
    for value in values.values():
        for part in value.split(","):
            if len(part.strip()) > 8:
                assert part.strip() not in text, "a settings error echoed a key"
    return text


class TestTokenKeySettings:
    def test_the_single_key_setting_still_works(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("REELAY_TOKEN_ENCRYPTION_KEY", OLD)

        assert keys_of(CommonSettings()) == [OLD]

    def test_unset_means_the_dev_key_on_a_laptop(self, env: pytest.MonkeyPatch) -> None:
        assert keys_of(CommonSettings()) == [DEV_TOKEN_KEY]

    def test_several_keys_are_read_in_order_and_the_first_encrypts(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("REELAY_TOKEN_ENCRYPTION_KEYS", f" {NEW} , {OLD} ,")

        settings = CommonSettings()

        assert keys_of(settings) == [NEW, OLD]
        sealed = TokenCipher(settings.token_keys()).encrypt("act.x")
        assert TokenCipher(settings.token_keys()[0]).decrypt(sealed) == "act.x"

    def test_an_empty_list_means_unset(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("REELAY_TOKEN_ENCRYPTION_KEYS", "")
        env.setenv("REELAY_TOKEN_ENCRYPTION_KEY", OLD)

        assert keys_of(CommonSettings()) == [OLD]

    def test_the_single_key_may_stay_set_when_it_is_listed(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("REELAY_TOKEN_ENCRYPTION_KEYS", f"{NEW},{OLD}")
        env.setenv("REELAY_TOKEN_ENCRYPTION_KEY", OLD)

        assert keys_of(CommonSettings()) == [NEW, OLD]

    def test_a_single_key_missing_from_the_list_is_refused(self, env: pytest.MonkeyPatch) -> None:
        text = refusal(env, REELAY_TOKEN_ENCRYPTION_KEYS=NEW, REELAY_TOKEN_ENCRYPTION_KEY=OLD)

        assert "is not one of REELAY_TOKEN_ENCRYPTION_KEYS" in text

    def test_a_malformed_key_is_named_by_position_never_echoed(self, env: pytest.MonkeyPatch) -> None:
        text = refusal(env, REELAY_TOKEN_ENCRYPTION_KEYS=f"{NEW},{MALFORMED}")

        assert "REELAY_TOKEN_ENCRYPTION_KEYS entry 2 of 2 must be 32 bytes" in text

    def test_a_malformed_single_key_is_refused_without_echo(self, env: pytest.MonkeyPatch) -> None:
        text = refusal(env, REELAY_TOKEN_ENCRYPTION_KEY=MALFORMED)

        assert "REELAY_TOKEN_ENCRYPTION_KEY must be 32 bytes" in text

    def test_commas_alone_are_refused(self, env: pytest.MonkeyPatch) -> None:
        assert "names no key" in refusal(env, REELAY_TOKEN_ENCRYPTION_KEYS=" , ,")

    def test_a_key_listed_twice_is_refused(self, env: pytest.MonkeyPatch) -> None:
        text = refusal(env, REELAY_TOKEN_ENCRYPTION_KEYS=f"{NEW},{OLD},{NEW}")

        assert "entry 3 of 3 repeats entry 1" in text


class TestTokenKeysInProd:
    @pytest.fixture
    def prod(self, env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
        env.setenv("REELAY_ENV", "prod")
        env.setenv("TIKTOK_CLIENT_SECRET", "a-real-secret")
        return env

    @pytest.mark.parametrize("keys", [f"{DEV_TOKEN_KEY},{OLD}", f"{NEW},{DEV_TOKEN_KEY}"])
    def test_the_dev_key_is_refused_in_any_position(self, prod: pytest.MonkeyPatch, keys: str) -> None:
        text = refusal(prod, REELAY_TOKEN_ENCRYPTION_KEYS=keys)

        assert "REELAY_TOKEN_ENCRYPTION_KEYS must be set in prod (the dev key is refused" in text

    def test_the_single_dev_key_is_still_refused(self, prod: pytest.MonkeyPatch) -> None:
        assert "REELAY_TOKEN_ENCRYPTION_KEY must be set in prod" in refusal(prod)

    def test_real_keys_are_accepted_without_the_single_key(self, prod: pytest.MonkeyPatch) -> None:
        prod.setenv("REELAY_TOKEN_ENCRYPTION_KEYS", f"{NEW},{OLD}")

        assert keys_of(CommonSettings()) == [NEW, OLD]
