"""TokenCipher: TikTok tokens encrypted at rest with Fernet (authenticated encryption)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from reelay_common.domain.errors import (
    AuthExpiredError,
)


class TokenCipher:
    """Encrypts tokens for storage (Fernet: AES-128-CBC + HMAC-SHA256, urlsafe base64 key of 32 bytes)."""

    def __init__(self, key: SecretStr) -> None:
        try:
            self._fernet = Fernet(key.get_secret_value().encode())
        except (ValueError, TypeError) as exc:
            # Never echo the key: say what is wrong with it, not what it is.
            raise ValueError("token encryption key must be 32 bytes, urlsafe base64-encoded") from exc

    def encrypt(self, plaintext: str) -> str:
        """The ciphertext of `plaintext`, as text."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext of `ciphertext`; AuthExpiredError if it was not made with this key."""
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise AuthExpiredError(
                "stored token cannot be decrypted with the configured key", code="token_undecryptable"
            ) from exc
