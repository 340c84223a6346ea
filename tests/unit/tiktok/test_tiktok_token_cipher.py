"""TokenCipher: tokens at rest are Fernet ciphertexts, unreadable without the key."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.accounts import AccountTokens
from reelay_common.domain.errors import AuthExpiredError
from reelay_common.settings import DEV_TOKEN_KEY

TOKEN = "act.1234567890abcdef"  # a test value


class TestTokenCipher:
    def test_round_trips_and_hides_the_plaintext(self) -> None:
        cipher = TokenCipher(SecretStr(Fernet.generate_key().decode()))
        sealed = cipher.encrypt(TOKEN)
        assert TOKEN not in sealed
        assert cipher.decrypt(sealed) == TOKEN

    def test_encrypting_twice_gives_different_ciphertexts(self) -> None:
        cipher = TokenCipher(SecretStr(Fernet.generate_key().decode()))
        assert cipher.encrypt(TOKEN) != cipher.encrypt(TOKEN)

    def test_accepts_the_dev_key_of_the_settings(self) -> None:
        cipher = TokenCipher(SecretStr(DEV_TOKEN_KEY))
        assert cipher.decrypt(cipher.encrypt(TOKEN)) == TOKEN

    def test_a_different_key_cannot_read_it(self) -> None:
        sealed = TokenCipher(SecretStr(Fernet.generate_key().decode())).encrypt(TOKEN)
        other = TokenCipher(SecretStr(Fernet.generate_key().decode()))
        with pytest.raises(AuthExpiredError) as info:
            other.decrypt(sealed)
        assert info.value.code == "token_undecryptable"

    @pytest.mark.parametrize("bad_key", ["", "short", "not base64 at all, but long enough to be 32 bytes!!"])
    def test_refuses_a_malformed_key_without_echoing_it(self, bad_key: str) -> None:
        with pytest.raises(ValueError, match="32 bytes") as info:
            TokenCipher(SecretStr(bad_key))
        if bad_key:
            assert bad_key not in str(info.value)


class TestAccountTokens:
    def test_repr_leaves_tokens_out(self) -> None:
        tokens = AccountTokens(
            account_id="a",
            status="connected",
            access_token=TOKEN,
            access_expires_at=None,
            refresh_token="rft.secret",  # a test value
            refresh_expires_at=None,
            token_version=1,
        )
        assert TOKEN not in repr(tokens)
        assert "rft.secret" not in repr(tokens)
