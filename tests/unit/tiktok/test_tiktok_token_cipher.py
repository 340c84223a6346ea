"""TokenCipher: tokens at rest are Fernet ciphertexts, unreadable without the key; with several keys
the first encrypts and every one decrypts (a key rotation)."""

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


def new_key() -> SecretStr:
    return SecretStr(Fernet.generate_key().decode())


class TestTokenCipherWithSeveralKeys:
    def test_an_older_key_still_decrypts(self) -> None:
        old = new_key()
        sealed = TokenCipher(old).encrypt(TOKEN)

        assert TokenCipher([new_key(), old]).decrypt(sealed) == TOKEN

    def test_the_first_key_encrypts(self) -> None:
        new, old = new_key(), new_key()
        sealed = TokenCipher([new, old]).encrypt(TOKEN)

        assert TokenCipher(new).decrypt(sealed) == TOKEN
        with pytest.raises(AuthExpiredError):
            TokenCipher(old).decrypt(sealed)

    def test_a_token_under_none_of_the_keys_is_refused_clearly(self) -> None:
        sealed = TokenCipher(new_key()).encrypt(TOKEN)
        cipher = TokenCipher([new_key(), new_key()])

        with pytest.raises(AuthExpiredError, match="any configured key") as info:
            cipher.decrypt(sealed)
        assert info.value.code == "token_undecryptable"
        assert cipher.key_index(sealed) is None
        with pytest.raises(AuthExpiredError, match="any configured key"):
            cipher.rotate(sealed)

    def test_key_index_names_the_key_that_made_a_token(self) -> None:
        new, old, older = new_key(), new_key(), new_key()
        cipher = TokenCipher([new, old, older])

        assert cipher.key_count == 3
        assert cipher.key_index(TokenCipher(new).encrypt(TOKEN)) == 0
        assert cipher.key_index(TokenCipher(older).encrypt(TOKEN)) == 2
        assert cipher.key_index("not a fernet token") is None

    def test_rotate_re_encrypts_under_the_first_key_keeping_the_plaintext(self) -> None:
        new, old = new_key(), new_key()
        sealed = TokenCipher(old).encrypt(TOKEN)

        rotated = TokenCipher([new, old]).rotate(sealed)

        assert rotated != sealed
        assert TokenCipher(new).decrypt(rotated) == TOKEN

    def test_refuses_an_empty_key_list(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            TokenCipher([])

    def test_names_the_malformed_key_by_position_never_by_value(self) -> None:
        bad = "not base64 at all, but long enough to be 32 bytes!!"
        with pytest.raises(ValueError, match="key 2 of 2 must be 32 bytes") as info:
            TokenCipher([new_key(), SecretStr(bad)])
        assert bad not in str(info.value)


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
