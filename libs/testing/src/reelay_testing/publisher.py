"""A fake ports.Publisher that remembers what was sent instead of putting it on Kafka."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


class FakePublisher:
    """ports.Publisher that records (topic, message, key); `fail_with` makes the next publishes raise."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, BaseModel, str]] = []
        self.raw: list[tuple[str, bytes, bytes | None]] = []
        self.fail_with: list[BaseException] = []

    async def publish(self, topic: str, message: BaseModel, *, key: str) -> None:
        """Record (topic, message, key), or raise the next queued failure."""
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.sent.append((topic, message, key))

    async def publish_raw(self, topic: str, value: bytes, *, key: bytes | None) -> None:
        """Record raw bytes (what the consumer loop uses for dead letters)."""
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.raw.append((topic, value, key))

    def messages(self, topic: str | None = None, of_type: type[M] | None = None) -> list[Any]:
        """The messages sent, optionally on one topic and/or of one type."""
        return [
            m
            for t, m, _ in self.sent
            if (topic is None or t == topic) and (of_type is None or isinstance(m, of_type))
        ]
