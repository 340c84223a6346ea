"""What a value looks like after a round trip through a MongoDB document, for the fake stores.

Written from BSON's rules, not from the Mongo adapter's code: datetimes are UTC at millisecond
precision, enums are stored by value, models as their JSON form, tuples as lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel


def to_millis(value: datetime) -> datetime:
    """`value` in UTC, cut to the millisecond (BSON dates keep no finer precision)."""
    if value.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass timezone-aware UTC")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def stored_now() -> datetime:
    """Now, as a stored date reads back."""
    return to_millis(datetime.now(UTC))


def as_stored(value: Any) -> Any:
    """`value` as it reads back from a document."""
    if isinstance(value, BaseModel):
        return as_stored(value.model_dump(mode="json", by_alias=True))
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return to_millis(value)
    if isinstance(value, Mapping):
        return {str(k): as_stored(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_stored(v) for v in value]
    return value
