"""Fault dice, fault config validation, webhook signing and bodies."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from pydantic import ValidationError
from tiktok_sandbox.faults import FaultConfig, FaultInjector, FaultRequest
from tiktok_sandbox.webhooks import event_body, sign, signature_header


class TestFaultInjector:
    def test_numbered_puts_get_their_fault(self) -> None:
        inj = FaultInjector(
            FaultConfig(put_error_on=[2], put_drop_before_store_on=[3], put_drop_after_store_on=[4])
        )
        assert [inj.next_put() for _ in range(5)] == [
            "none",
            "error",
            "drop_before_store",
            "drop_after_store",
            "none",
        ]
        assert inj.injected == {"put_error": 1, "put_drop_before_store": 1, "put_drop_after_store": 1}

    def test_same_seed_same_sequence(self) -> None:
        config = FaultConfig(
            seed=3, put_error_rate=0.25, put_drop_before_store_rate=0.25, put_drop_after_store_rate=0.25
        )
        a, b = FaultInjector(config), FaultInjector(config)
        seq = [a.next_put() for _ in range(50)]
        assert seq == [b.next_put() for _ in range(50)]
        assert {"none", "error", "drop_before_store", "drop_after_store"} == set(seq)

    def test_setting_faults_restarts_the_count(self) -> None:
        inj = FaultInjector(FaultConfig(put_error_on=[1]))
        assert inj.next_put() == "error"
        inj.set(FaultConfig(put_error_on=[1]))
        assert inj.next_put() == "error"

    def test_bursts_run_out(self) -> None:
        inj = FaultInjector(FaultConfig(rate_limit_burst={"video_init": 2}, error_burst={"upload": 1}))
        assert [inj.take_rate_limit("video_init") for _ in range(3)] == [True, True, False]
        assert inj.take_rate_limit("creator_info") is False
        assert [inj.take_error("upload") for _ in range(2)] == [True, False]

    def test_forced_failures_are_consumed_in_order(self) -> None:
        inj = FaultInjector(FaultConfig(fail_next_publish=["internal", "spam_risk_text"]))
        assert [inj.take_forced_failure() for _ in range(3)] == ["internal", "spam_risk_text", None]

    def test_the_configured_faults_are_not_mutated(self) -> None:
        config = FaultConfig(rate_limit_burst={"cancel": 1})
        FaultInjector(config).take_rate_limit("cancel")
        assert config.rate_limit_burst == {"cancel": 1}

    @pytest.mark.parametrize(
        "bad",
        [
            {"put_error_rate": -0.1},
            {"put_error_rate": 0.5, "put_drop_before_store_rate": 0.6},
            {"put_error_status": 404},
            {"fail_next_publish": ["nope"]},
            {"delay_seconds": {"upload": -1}},
            {"rate_limit_burst": {"upload": -1}},
            {"unknown": 1},
        ],
    )
    def test_invalid_config_is_refused(self, bad: dict[str, object]) -> None:
        with pytest.raises(ValidationError):
            FaultConfig.model_validate(bad)

    def test_request_separates_actions_from_standing_config(self) -> None:
        req = FaultRequest.model_validate({"revoke_tokens": ["u1"], "put_error_on": [1]})
        assert req.config() == FaultConfig(put_error_on=[1])


class TestSigning:
    def test_signature_is_hmac_of_t_dot_raw_body(self) -> None:
        body = b'{"a":1}'
        expected = hmac.new(b"secret", b"1633174587." + body, hashlib.sha256).hexdigest()
        assert sign("secret", 1633174587, body) == expected
        assert signature_header("secret", body, 1633174587) == f"t=1633174587,s={expected}"

    def test_body_carries_content_as_a_json_string(self) -> None:
        raw = event_body(
            client_key="ck",
            event="post.publish.complete",
            open_id="u",
            content={"publish_id": "p"},
            create_time=5,
        )
        body = json.loads(raw)
        assert body == {
            "client_key": "ck",
            "event": "post.publish.complete",
            "create_time": 5,
            "user_openid": "u",
            "content": '{"publish_id":"p"}',
        }
