"""An in-memory ports.WebhookLedger (checked against MongoWebhookLedger by the same contract test)."""

from __future__ import annotations


class FakeWebhookLedger:
    """The applied webhooks in a set."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    async def seen(self, key: str) -> bool:
        return key in self.keys

    async def remember(self, key: str) -> None:
        self.keys.add(key)
