"""TokenCipher: TikTok tokens encrypted at rest with Fernet (authenticated encryption), under one or
more keys so that the key can be rotated without a stop (the first encrypts, every key decrypts)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from reelay_common.domain.errors import (
    AuthExpiredError,
)

KEY_FORMAT = "32 bytes, urlsafe base64-encoded (Fernet.generate_key())"


def fernet_key(key: SecretStr, *, what: str = "token encryption key") -> Fernet:
    """The Fernet of `key`; ValueError naming `what` (never the key itself) when it is malformed."""
    try:
        return Fernet(key.get_secret_value().encode())
    except (ValueError, TypeError) as exc:
        # Never echo the key: say what is wrong with it, not what it is.
        raise ValueError(f"{what} must be {KEY_FORMAT}") from exc


def key_name(index: int, count: int) -> str:
    """How an error names the key at `index` of `count` (by position: the key itself is secret)."""
    return "token encryption key" if count == 1 else f"token encryption key {index + 1} of {count}"


class TokenCipher:
    """Encrypts tokens for storage (Fernet: AES-128-CBC + HMAC-SHA256, urlsafe base64 keys of 32 bytes).

    With several keys (cryptography's MultiFernet) the first encrypts and every one decrypts, so a
    new key is put first, the services restarted, the stored tokens re-encrypted (`rotate`, run by
    `reelay-admin tokens rotate`), and only then the old key removed.
    """

    def __init__(self, keys: SecretStr | Sequence[SecretStr]) -> None:
        listed = [keys] if isinstance(keys, SecretStr) else list(keys)
        if not listed:
            raise ValueError("at least one token encryption key is needed")
        self._fernets = [fernet_key(key, what=key_name(i, len(listed))) for i, key in enumerate(listed)]
        self._multi = MultiFernet(self._fernets)

    @property
    def key_count(self) -> int:
        """How many keys decrypt (the first of them encrypts)."""
        return len(self._fernets)

    def encrypt(self, plaintext: str) -> str:
        """The ciphertext of `plaintext` under the first key, as text."""
        return self._multi.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext of `ciphertext`; AuthExpiredError if none of the keys made it."""
        try:
            return self._multi.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise AuthExpiredError(
                "stored token cannot be decrypted with any configured key", code="token_undecryptable"
            ) from exc

    def key_index(self, ciphertext: str) -> int | None:
        """Which key made `ciphertext`: 0 for the first (current) one, None for none of them.

        A Fernet token does not name its key, so each key's HMAC is tried in turn (cheap: no
        decryption happens until one matches)."""
        raw = ciphertext.encode()
        for index, fernet in enumerate(self._fernets):
            try:
                fernet.decrypt(raw)
            except InvalidToken:
                continue
            return index
        return None

    def rotate(self, ciphertext: str) -> str:
        """`ciphertext` re-encrypted under the first key (same plaintext, same timestamp);
        AuthExpiredError if none of the keys made it."""
        try:
            return self._multi.rotate(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise AuthExpiredError(
                "stored token cannot be decrypted with any configured key", code="token_undecryptable"
            ) from exc
