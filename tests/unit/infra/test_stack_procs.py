"""Specification of pid files and stopping: only our own processes are ever signalled."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from reelay_dev import config as c
from reelay_dev.procs import (
    ProcInfo,
    is_ours,
    parse_environ,
    read_pid,
    split_nul,
    stop_all,
    write_pid,
)
from reelay_testing.clocks import FakeClock


class FakeTable:
    """A process table: pid -> info; `on_signal` decides how a process reacts to a signal."""

    def __init__(self) -> None:
        self.procs: dict[int, ProcInfo] = {}
        self.sent: list[tuple[int, signal.Signals]] = []
        self.ignores_term: set[int] = set()

    def info(self, pid: int) -> ProcInfo | None:
        return self.procs.get(pid)

    def send(self, pid: int, sig: signal.Signals) -> None:
        self.sent.append((pid, sig))
        if sig == signal.SIGKILL or pid not in self.ignores_term:
            self.procs.pop(pid, None)


@pytest.fixture
def cfg(tmp_path: Path) -> c.StackConfig:
    return c.StackConfig.from_env(tmp_path, {}, python="/venv/bin/python")


def ours(cfg: c.StackConfig, spec: c.ProcessSpec) -> ProcInfo:
    return ProcInfo(cmdline=spec.argv, environ={c.STACK_ID_ENV: cfg.stack_id}, zombie=False)


class TestPidFiles:
    def test_round_trips(self, tmp_path: Path) -> None:
        path = tmp_path / "run" / "kafka.pid"
        write_pid(path, 4242)
        assert read_pid(path) == 4242
        assert path.read_text() == "4242\n"
        assert not list(tmp_path.glob("run/*.tmp"))

    def test_missing_file_is_no_pid(self, tmp_path: Path) -> None:
        assert read_pid(tmp_path / "nope.pid") is None

    @pytest.mark.parametrize("text", ["", "  \n", "abc", "12ab", "-5", "0", "1", "4.2"])
    def test_garbage_or_dangerous_pids_are_no_pid(self, tmp_path: Path, text: str) -> None:
        path = tmp_path / "x.pid"
        path.write_text(text)
        assert read_pid(path) is None


class TestOwnership:
    def test_a_live_process_with_our_marker_and_stack_id_is_ours(self) -> None:
        info = ProcInfo(
            cmdline=("java", "kafka.Kafka", "/r/.run/conf/kafka/server.properties"),
            environ={c.STACK_ID_ENV: "/r/.run"},
            zombie=False,
        )
        assert is_ours(info, marker="/r/.run/conf/kafka/server.properties", stack_id="/r/.run")

    def test_a_gone_process_is_not_ours(self) -> None:
        assert not is_ours(None, marker="m", stack_id="s")

    def test_a_zombie_is_not_ours(self) -> None:
        assert not is_ours(
            ProcInfo(cmdline=("m",), environ={c.STACK_ID_ENV: "s"}, zombie=True), marker="m", stack_id="s"
        )

    def test_a_reused_pid_running_something_else_is_not_ours(self) -> None:
        info = ProcInfo(cmdline=("/usr/bin/vim", "notes"), environ={}, zombie=False)
        assert not is_ours(info, marker="reelay_ingest", stack_id="s")

    def test_the_same_program_from_another_stack_is_not_ours(self) -> None:
        info = ProcInfo(
            cmdline=("python", "-m", "reelay_ingest"), environ={c.STACK_ID_ENV: "/other/.run"}, zombie=False
        )
        assert not is_ours(info, marker="reelay_ingest", stack_id="/r/.run")

    def test_without_a_readable_environment_the_marker_decides(self) -> None:
        info = ProcInfo(cmdline=("python", "-m", "reelay_ingest"), environ=None, zombie=False)
        assert is_ours(info, marker="reelay_ingest", stack_id="/r/.run")

    def test_proc_files_are_parsed(self) -> None:
        assert split_nul(b"java\0-cp\0a b\0") == ("java", "-cp", "a b")
        assert parse_environ(b"A=1\0B=x=y\0junk\0") == {"A": "1", "B": "x=y"}


class TestStopAll:
    def test_terms_our_process_waits_for_it_and_removes_the_pid_file(self, cfg: c.StackConfig) -> None:
        table, clock = FakeTable(), FakeClock(1000.0)
        spec = c.ferretdb_spec(cfg)
        table.procs[500] = ours(cfg, spec)
        write_pid(cfg.pid_file(spec.name), 500)
        [outcome] = stop_all(
            cfg, [spec], table, send=table.send, clock=clock.time, sleep=clock.sleep_blocking
        )
        assert outcome.result == "stopped"
        assert table.sent == [(500, signal.SIGTERM)]
        assert not cfg.pid_file(spec.name).exists()

    def test_kills_a_process_that_outlives_its_stop_timeout(self, cfg: c.StackConfig) -> None:
        table, clock = FakeTable(), FakeClock(1000.0)
        spec = c.ferretdb_spec(cfg)
        table.procs[500] = ours(cfg, spec)
        table.ignores_term.add(500)
        write_pid(cfg.pid_file(spec.name), 500)
        [outcome] = stop_all(
            cfg, [spec], table, send=table.send, clock=clock.time, sleep=clock.sleep_blocking
        )
        assert outcome.result == "killed"
        assert table.sent == [(500, signal.SIGTERM), (500, signal.SIGKILL)]
        assert clock.time() - 1000.0 == pytest.approx(spec.stop_timeout_seconds, abs=0.5)
        assert not cfg.pid_file(spec.name).exists()

    def test_never_signals_a_pid_that_is_not_ours(self, cfg: c.StackConfig) -> None:
        table, clock = FakeTable(), FakeClock(1000.0)
        spec = c.kafka_spec(cfg)
        table.procs[500] = ProcInfo(cmdline=("/usr/sbin/sshd",), environ={}, zombie=False)
        write_pid(cfg.pid_file(spec.name), 500)
        [outcome] = stop_all(
            cfg, [spec], table, send=table.send, clock=clock.time, sleep=clock.sleep_blocking
        )
        assert outcome.result == "stale pid file"
        assert table.sent == []
        assert not cfg.pid_file(spec.name).exists()
        assert 500 in table.procs

    def test_stops_several_at_once_and_reports_each(self, cfg: c.StackConfig) -> None:
        table, clock = FakeTable(), FakeClock(1000.0)
        specs = c.service_specs(cfg)
        for pid, spec in enumerate(specs, start=700):
            table.procs[pid] = ours(cfg, spec)
            write_pid(cfg.pid_file(spec.name), pid)
        outcomes = stop_all(cfg, specs, table, send=table.send, clock=clock.time, sleep=clock.sleep_blocking)
        assert [(o.name, o.result) for o in outcomes] == [(s.name, "stopped") for s in specs]
        assert sorted(table.sent) == [(700, signal.SIGTERM), (701, signal.SIGTERM), (702, signal.SIGTERM)]

    def test_nothing_to_stop_is_reported_as_not_running(self, cfg: c.StackConfig) -> None:
        table, clock = FakeTable(), FakeClock(1000.0)
        [outcome] = stop_all(
            cfg, [c.kafka_spec(cfg)], table, send=table.send, clock=clock.time, sleep=clock.sleep_blocking
        )
        assert outcome.result == "not running"
        assert table.sent == []
