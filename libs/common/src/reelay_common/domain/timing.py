"""Waiting that a stop signal cuts short: the one asyncio helper the loops share.

Kept apart from `rules` so that the rules stay pure values and functions, free of any event loop."""

from __future__ import annotations

import asyncio


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, waking as soon as `stop` is set; True if it was set (time to stop)."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
