"""The supervisor every service runs under: workers run together, stop together, and a failure of
one stops the rest gracefully; the one readiness runner behind every /readyz."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from reelay_common.readiness import check_readiness
from reelay_common.runtime import WorkerStopped, stop_on_signals, supervise


class Worker:
    """A worker that runs until stop, then takes `drain` seconds to finish what it holds."""

    def __init__(self, drain: float = 0.0) -> None:
        self.drain = drain
        self.started = asyncio.Event()
        self.finished = False
        self.cancelled = False

    async def __call__(self, stop: asyncio.Event) -> None:
        self.started.set()
        try:
            await stop.wait()
            await asyncio.sleep(self.drain)
            self.finished = True
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class TestSupervise:
    async def test_returns_once_stop_is_set_and_every_worker_has_finished(self) -> None:
        stop = asyncio.Event()
        fast, slow = Worker(), Worker(drain=0.2)
        running = asyncio.create_task(supervise({"fast": fast, "slow": slow}, stop))
        await asyncio.wait_for(asyncio.gather(fast.started.wait(), slow.started.wait()), 5)

        stop.set()
        await asyncio.wait_for(running, 5)

        assert fast.finished
        assert slow.finished

    async def test_a_failing_worker_stops_the_others_gracefully_and_its_error_is_raised(self) -> None:
        other = Worker(drain=0.1)

        async def broken(stop: asyncio.Event) -> None:
            await other.started.wait()
            raise ConnectionError("the ops port is taken")

        with pytest.raises(ConnectionError, match="ops port"):
            await asyncio.wait_for(supervise({"ops": broken, "consumer": other}, asyncio.Event()), 5)

        assert other.finished
        assert not other.cancelled

    async def test_a_worker_that_returns_on_its_own_stops_the_service(self) -> None:
        other = Worker()

        async def quitter(stop: asyncio.Event) -> None:
            await other.started.wait()

        with pytest.raises(WorkerStopped, match="scheduler"):
            await asyncio.wait_for(supervise({"scheduler": quitter, "consumer": other}, asyncio.Event()), 5)

        assert other.finished

    async def test_a_hard_stop_cancels_the_workers_without_grace(self) -> None:
        worker = Worker(drain=60)
        running = asyncio.create_task(supervise({"consumer": worker}, asyncio.Event()))
        await asyncio.wait_for(worker.started.wait(), 5)

        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 5)

        assert worker.cancelled
        assert not worker.finished

    async def test_sigterm_asks_for_a_graceful_stop(self) -> None:
        stop = asyncio.Event()
        worker = Worker()

        async def terminate(stop: asyncio.Event) -> None:
            await worker.started.wait()
            os.kill(os.getpid(), signal.SIGTERM)  # handled: it sets stop instead of killing
            await stop.wait()

        with stop_on_signals(stop):
            await asyncio.wait_for(supervise({"consumer": worker, "killer": terminate}, stop), 5)

        assert worker.finished


class TestReadiness:
    async def test_ready_only_when_every_check_passes_and_an_error_counts_as_failed(self) -> None:
        async def ok() -> bool:
            return True

        async def broken() -> bool:
            raise ConnectionError("no route")

        passing = await check_readiness({"mongo": ok, "kafka": ok})
        failing = await check_readiness({"mongo": ok, "kafka": broken})

        assert passing.ready
        assert passing.checks == {"mongo": True, "kafka": True}
        assert not failing.ready
        assert failing.checks == {"mongo": True, "kafka": False}
