"""Kafka away is logged once and back once, however many connection errors aiokafka logs meanwhile."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import structlog.testing
from aiokafka.errors import KafkaConnectionError, UnknownMemberIdError
from reelay_common.adapters.kafka.availability import KafkaAvailability, is_connection_error
from reelay_testing.clocks import FakeClock


@dataclass
class Watched:
    """A tracker installed on aiokafka's loggers, its clock, and what it (and aiokafka) logged."""

    availability: KafkaAvailability
    clock: FakeClock
    said: list[dict[str, object]]
    caplog: pytest.LogCaptureFixture

    def events(self) -> list[object]:
        return [e["event"] for e in self.said]

    def aiokafka_records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name.startswith("aiokafka")]


@pytest.fixture
def watched(caplog: pytest.LogCaptureFixture) -> Iterator[Watched]:
    clock = FakeClock(0.0)
    availability = KafkaAvailability(clock=clock.time)
    availability.install()
    caplog.set_level(logging.WARNING)
    try:
        with structlog.testing.capture_logs() as said:
            yield Watched(availability, clock, said, caplog)
    finally:
        availability.uninstall()


def broker_down_for_a_while(times: int) -> None:
    """What aiokafka logs while a broker refuses connections (aiokafka/client.py logs as "aiokafka")."""
    client = logging.getLogger("aiokafka")
    for _ in range(times):
        client.error("Unable connect to node with id %s: %s", 1, KafkaConnectionError("Connect call failed"))
        client.error("Unable to update metadata from %s", [1])
        logging.getLogger("aiokafka.consumer.fetcher").error(
            "Failed fetch messages from %s: %s", 1, ConnectionRefusedError(111, "Connection refused")
        )


class TestKafkaAvailability:
    def test_an_outage_is_logged_once_and_its_end_once(self, watched: Watched) -> None:
        broker_down_for_a_while(50)  # ~150 errors, as in 5 s of aiokafka reconnecting
        watched.clock.advance(5)
        watched.availability.available()
        watched.availability.available()  # already up: nothing more to say

        assert watched.events() == ["kafka_unavailable", "kafka_available_again"]
        down, back = watched.said
        assert "Unable connect to node with id 1" in str(down["error"])
        assert (back["down_for_s"], back["errors_held_back"]) == (5.0, 149)
        assert watched.aiokafka_records() == []  # all held back

    def test_each_outage_of_a_flapping_broker_is_logged(self, watched: Watched) -> None:
        for _ in range(3):
            broker_down_for_a_while(10)
            watched.availability.available()
        assert watched.events() == ["kafka_unavailable", "kafka_available_again"] * 3

    def test_other_aiokafka_warnings_still_get_through(self, watched: Watched) -> None:
        logging.getLogger("aiokafka.consumer.group_coordinator").error(
            "OffsetCommit failed before join, ignoring: %s", UnknownMemberIdError()
        )
        assert watched.said == []
        assert not watched.availability.down
        [record] = watched.aiokafka_records()
        assert "OffsetCommit failed" in record.getMessage()

    def test_failures_reported_by_reelay_itself_count_as_the_same_outage(self, watched: Watched) -> None:
        watched.availability.unavailable("poll: KafkaConnectionError()")
        broker_down_for_a_while(3)
        watched.availability.unavailable("commit: KafkaConnectionError()")
        assert watched.events() == ["kafka_unavailable"]
        assert watched.availability.down

    @pytest.mark.parametrize(
        ("name", "level", "msg", "args", "expected"),
        [
            ("aiokafka", logging.ERROR, 'Unable connect to "%s:%s": %s', ("h", 9092, "refused"), True),
            ("aiokafka.conn", logging.WARNING, "x %s", (TimeoutError(),), True),
            ("aiokafka", logging.DEBUG, "Unable to update metadata from %s", ([1],), False),
            ("pymongo", logging.ERROR, "x %s", (ConnectionRefusedError(),), False),
            (
                "aiokafka.consumer.group_coordinator",
                logging.ERROR,
                "Heartbeat failed: %r",
                (ValueError(),),
                False,
            ),
        ],
    )
    def test_what_counts_as_a_connection_error(
        self, name: str, level: int, msg: str, args: tuple[object, ...], expected: bool
    ) -> None:
        record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
        assert is_connection_error(record) is expected
