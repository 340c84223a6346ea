"""Bounded waits for asynchronous effects: poll until something holds, never a bare sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,  # noqa: ASYNC109  # see the implementation
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T | None],
    *,
    timeout: float = ...,  # noqa: ASYNC109  # see the implementation
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109  # the bound is this helper's job; the loop checks it between probes
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Call `probe` (plain or async) until it returns something truthy, and return that.

    Probes at least once; after `timeout` seconds an AssertionError names `what` and the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)
