"""The pure pieces of connecting an account (docs/architecture.md, "The account lifecycle")."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from reelay_common.domain.oauth import (
    PendingConnect,
    authorize_base_for,
    authorize_url,
    code_challenge,
    new_code_verifier,
    new_state_token,
    state_hash,
)
from reelay_common.domain.records import AccountRecord, AccountStatus


class TestAuthorizeUrl:
    def test_the_real_api_authorizes_on_www_tiktok_com_any_other_base_on_itself(self) -> None:
        assert authorize_base_for("https://open.tiktokapis.com") == "https://www.tiktok.com"
        assert authorize_base_for("https://open.tiktokapis.com/") == "https://www.tiktok.com"
        assert authorize_base_for("http://127.0.0.1:8100/") == "http://127.0.0.1:8100"

    def test_carries_tiktoks_parameters_and_pkce_when_asked(self) -> None:
        url = authorize_url(
            "https://www.tiktok.com",
            client_key="ck",
            scopes=("video.publish", "user.info.basic"),
            redirect_uri="https://r.example/cb?x=1",
            state="st",
            code_verifier="v" * 43,
        )
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://www.tiktok.com/v2/auth/authorize/"
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert q == {
            "client_key": "ck",
            "scope": "video.publish,user.info.basic",
            "response_type": "code",
            "redirect_uri": "https://r.example/cb?x=1",
            "state": "st",
            "code_challenge": code_challenge("v" * 43),
            "code_challenge_method": "S256",
        }
        web = authorize_url(
            "https://www.tiktok.com",
            client_key="ck",
            scopes=("a",),
            redirect_uri="r",
            state="s",
            code_verifier=None,
        )
        assert "code_challenge" not in web


class TestSecrets:
    def test_states_are_random_and_stored_only_as_their_hash(self) -> None:
        states = {new_state_token() for _ in range(100)}
        assert len(states) == 100
        state = states.pop()
        assert len(state) >= 43
        assert state_hash(state) == hashlib.sha256(state.encode()).hexdigest()
        assert state not in state_hash(state)

    def test_the_verifier_is_in_pkces_alphabet_and_the_challenge_is_s256(self) -> None:
        verifier = new_code_verifier()
        assert re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier)
        digest = hashlib.sha256(verifier.encode()).digest()
        assert code_challenge(verifier) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def test_a_pending_connect_never_shows_its_verifier(self) -> None:
        pending = PendingConnect("t", "a", ("s",), "r", datetime.now(UTC), code_verifier="secret-verifier")
        assert "secret-verifier" not in repr(pending)


class TestAccountStatus:
    def test_a_legacy_revoked_account_reads_as_disconnected(self) -> None:
        now = datetime.now(UTC)
        record = AccountRecord.model_validate(
            {"_id": "a", "status": "revoked", "created_at": now, "updated_at": now}
        )
        assert record.status is AccountStatus.DISCONNECTED

    def test_missing_scopes_are_those_asked_for_and_not_granted(self) -> None:
        now = datetime.now(UTC)
        record = AccountRecord.model_validate(
            {
                "_id": "a",
                "scopes": ["video.publish"],
                "requested_scopes": ["video.publish", "video.upload"],
                "created_at": now,
                "updated_at": now,
            }
        )
        assert record.missing_scopes == ["video.upload"]
