"""translate_errors: the one translation of MongoDB's errors, as a context manager and a decorator."""

from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect, DuplicateKeyError, ServerSelectionTimeoutError
from reelay_common.adapters.mongo.client import translate_errors
from reelay_common.domain.errors import DatabaseUnavailableError, RetryableError


class TestTranslateErrors:
    def test_an_unreachable_database_is_retryable_and_names_what_failed(self) -> None:
        cause = ServerSelectionTimeoutError("no servers")
        with pytest.raises(DatabaseUnavailableError) as caught, translate_errors("read an upload"):
            raise cause
        assert isinstance(caught.value, RetryableError)
        assert caught.value.message == "MongoDB could not read an upload: ServerSelectionTimeoutError"
        assert caught.value.__cause__ is cause

    def test_a_duplicate_key_passes_through_for_the_adapter_to_decide(self) -> None:
        with pytest.raises(DuplicateKeyError), translate_errors("insert an upload"):
            raise DuplicateKeyError("E11000")

    def test_other_errors_are_not_renamed(self) -> None:
        with pytest.raises(KeyError), translate_errors("read an upload"):
            raise KeyError("bug")

    async def test_decorates_a_coroutine_function(self) -> None:
        @translate_errors("take a rate-limit slot")
        async def swap(version: int) -> bool:
            if version < 0:
                raise AutoReconnect("primary stepped down")
            return True

        assert await swap(1) is True
        with pytest.raises(DatabaseUnavailableError, match="take a rate-limit slot: AutoReconnect"):
            await swap(-1)
