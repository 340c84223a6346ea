"""Specification of `make up` on servers it is given: KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI and (for the
s3 blob store) S3_ENDPOINT_URL are used, never started, and `make down` never stops them."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from reelay_dev import config as c
from reelay_dev.orchestrate import (
    StackError,
    all_stages,
    bring_down,
    check_externals,
    record_externals,
    recorded_externals,
    status_lines,
)
from reelay_dev.procs import ProcInfo, write_pid

KAFKA = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092"}
MONGO = {"MONGODB_URI": "mongodb://127.0.0.1:27117"}
S3 = {"REELAY_BLOB_STORE": "s3", "S3_ENDPOINT_URL": "http://127.0.0.1:18333"}


def cfg_from(env: dict[str, str], root: Path = Path("/repo")) -> c.StackConfig:
    return c.StackConfig.from_env(root, env, python="/repo/.venv/bin/python")


def first_stage(env: dict[str, str]) -> list[str]:
    return [spec.name for spec in c.stack_stages(cfg_from(env))[0]]


class TestWhatMakeUpStarts:
    def test_on_a_fresh_machine_everything_but_the_s3_server(self) -> None:
        assert first_stage({}) == ["kafka", "ferretdb", "sandbox"]
        assert c.externals(cfg_from({})) == []

    @pytest.mark.parametrize(
        ("env", "started"),
        [
            (KAFKA, ["ferretdb", "sandbox"]),
            (MONGO, ["kafka", "sandbox"]),
            (KAFKA | MONGO, ["sandbox"]),
            (KAFKA | MONGO | S3, ["sandbox"]),
            (KAFKA | MONGO | {"REELAY_BLOB_STORE": "s3"}, ["seaweedfs", "sandbox"]),
            (MONGO | S3 | {"TIKTOK_API_BASE_URL": "http://tiktok.example:9000"}, ["kafka"]),
        ],
    )
    def test_only_what_the_environment_names_no_server_for(
        self, env: dict[str, str], started: list[str]
    ) -> None:
        assert first_stage(env) == started

    def test_the_services_are_told_the_given_servers(self) -> None:
        cfg = cfg_from(KAFKA | MONGO | S3 | {"REELAY_S3_BUCKET": "shared-bucket"})
        for spec in c.service_specs(cfg):
            assert spec.env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
            assert spec.env["MONGODB_URI"] == "mongodb://127.0.0.1:27117"
            assert spec.env["S3_ENDPOINT_URL"] == "http://127.0.0.1:18333"
            assert spec.env["REELAY_S3_BUCKET"] == "shared-bucket"
            # An external S3's keys are the operator's, passed through from the environment.
            assert "REELAY_S3_ACCESS_KEY_ID" not in spec.env

    def test_the_ports_of_a_server_not_started_may_be_anything(self) -> None:
        cfg = cfg_from(KAFKA | MONGO | {"KAFKA_PORT": "8000", "FERRETDB_PORT": "8000"})
        assert "kafka" not in cfg.ports_by_name()
        assert "ferretdb" not in cfg.ports_by_name()

    def test_an_s3_endpoint_without_the_s3_store_is_not_used(self) -> None:
        cfg = cfg_from({"S3_ENDPOINT_URL": "http://127.0.0.1:18333"})
        assert [e.name for e in c.externals(cfg)] == []
        assert "S3_ENDPOINT_URL" not in c.service_env(cfg)

    def test_each_given_server_is_named_with_its_variable_and_a_check(self) -> None:
        found = c.externals(cfg_from(KAFKA | MONGO | S3))
        assert [(e.name, e.env_var, e.address, e.health.kind) for e in found] == [
            ("kafka", "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092", "kafka"),
            ("mongodb", "MONGODB_URI", "mongodb://127.0.0.1:27117", "mongo"),
            # Its keys are not the dev identity's: the check must not create buckets there.
            ("s3", "S3_ENDPOINT_URL", "http://127.0.0.1:18333", "tcp"),
        ]

    @pytest.mark.parametrize("raw", ["127.0.0.1:27017", "http://127.0.0.1:27017", "postgres://x"])
    def test_a_mongodb_uri_that_is_not_one_is_refused(self, raw: str) -> None:
        with pytest.raises(c.ConfigError, match="MONGODB_URI must be a mongodb://"):
            cfg_from({"MONGODB_URI": raw})

    def test_a_password_in_a_uri_is_never_shown(self) -> None:
        cfg = cfg_from({"MONGODB_URI": "mongodb://reelay:s3cret@db.example:27017/?authSource=admin"})
        [ext] = c.externals(cfg)
        assert ext.shown == "mongodb://reelay:***@db.example:27017/?authSource=admin"
        assert ext.address == cfg.mongodb_uri  # the services still get the real one
        with pytest.raises(c.ConfigError) as refused:
            cfg_from({"MONGODB_URI": "mysql://root:hunter2@db"})
        assert "hunter2" not in str(refused.value)


class FakeTable:
    """A process table where every listed pid is alive and exits on the first signal."""

    def __init__(self) -> None:
        self.procs: dict[int, ProcInfo] = {}
        self.sent: list[tuple[int, signal.Signals]] = []

    def info(self, pid: int) -> ProcInfo | None:
        return self.procs.get(pid)

    def send(self, pid: int, sig: signal.Signals) -> None:
        self.sent.append((pid, sig))
        self.procs.pop(pid, None)


class TestMakeDown:
    def test_stops_what_up_started_and_never_an_external_server(self, tmp_path: Path) -> None:
        cfg = cfg_from(KAFKA | MONGO, root=tmp_path)
        table = FakeTable()
        # The shared servers: the same programs, run by another stack (another id), no pid file here.
        other = {c.STACK_ID_ENV: "/elsewhere/.run"}
        table.procs[300] = ProcInfo(cmdline=c.kafka_spec(cfg).argv, environ=other, zombie=False)
        table.procs[301] = ProcInfo(cmdline=c.ferretdb_spec(cfg).argv, environ=other, zombie=False)
        # What this `up` started: the sandbox and the services.
        ours = {c.STACK_ID_ENV: cfg.stack_id}
        started = [spec for stage in c.stack_stages(cfg) for spec in stage]
        for pid, spec in enumerate(started, start=700):
            table.procs[pid] = ProcInfo(cmdline=spec.argv, environ=ours, zombie=False)
            write_pid(cfg.pid_file(spec.name), pid)

        stages = all_stages(cfg)
        assert {"kafka", "ferretdb"} <= {
            spec.name for spec in stages[0]
        }  # one left by an earlier `up` is ours
        assert bring_down(cfg, stages, table, lambda _line: None, send=table.send)
        assert sorted(table.sent) == [(pid, signal.SIGTERM) for pid in range(700, 700 + len(started))]
        assert {300, 301} <= set(table.procs)

    def test_stops_a_kafka_an_earlier_up_started_even_when_now_told_of_another(self, tmp_path: Path) -> None:
        cfg = cfg_from(KAFKA, root=tmp_path)
        table = FakeTable()
        kafka = c.kafka_spec(cfg)
        table.procs[800] = ProcInfo(cmdline=kafka.argv, environ={c.STACK_ID_ENV: cfg.stack_id}, zombie=False)
        write_pid(cfg.pid_file(kafka.name), 800)
        assert bring_down(cfg, all_stages(cfg), table, lambda _line: None, send=table.send)
        assert table.sent == [(800, signal.SIGTERM)]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port on loopback that accepts connections (a stand-in server)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestStatusAndChecks:
    async def test_status_names_each_external_server_and_whether_it_answers(
        self, tmp_path: Path, listening: int
    ) -> None:
        cfg = cfg_from({}, root=tmp_path)
        down = closed_port()
        record_externals(
            cfg,
            [
                c.External(
                    "s3",
                    "S3_ENDPOINT_URL",
                    f"http://127.0.0.1:{listening}",
                    c.Health("tcp", f"http://127.0.0.1:{listening}", 1),
                ),
                c.External(
                    "mongodb",
                    "MONGODB_URI",
                    f"mongodb://u:pw@127.0.0.1:{down}",
                    c.Health("tcp", f"http://127.0.0.1:{down}", 1),
                ),
            ],
        )
        lines = await status_lines(cfg, FakeTable())
        not_ours = "not started by this stack"
        assert lines[:2] == [
            f"  s3             external http://127.0.0.1:{listening} (S3_ENDPOINT_URL, {not_ours}), answers",
            f"  mongodb        external mongodb://u:***@127.0.0.1:{down} (MONGODB_URI, {not_ours}), "
            "NOT answering",
        ]
        # The server it stands in for is not reported as a stopped process of its own.
        names = [line.split()[0] for line in lines]
        assert "ferretdb" not in names
        assert "seaweedfs" not in names
        assert "kafka" in names  # not external: our own, stopped

    async def test_without_a_record_status_goes_by_the_environment(self, tmp_path: Path) -> None:
        cfg = cfg_from(KAFKA, root=tmp_path)
        assert [e.name for e in recorded_externals(cfg)] == ["kafka"]
        (cfg.run_dir).mkdir(parents=True)
        (cfg.run_dir / "externals.json").write_text("{not json")
        assert [e.name for e in recorded_externals(cfg)] == ["kafka"]

    def test_the_record_keeps_each_server_and_its_check(self, tmp_path: Path) -> None:
        given = c.externals(cfg_from(KAFKA | MONGO | S3))
        assert c.externals_from_json(c.externals_json(given)) == [
            c.External(e.name, e.env_var, e.address, c.Health(e.health.kind, e.address, 30.0)) for e in given
        ]

    async def test_up_refuses_a_given_server_that_does_not_answer_naming_its_variable(self) -> None:
        down = closed_port()
        ext = c.External(
            "s3",
            "S3_ENDPOINT_URL",
            f"http://127.0.0.1:{down}",
            c.Health("tcp", f"http://127.0.0.1:{down}", 0.2),
        )
        with pytest.raises(StackError, match=rf"S3_ENDPOINT_URL=http://127.0.0.1:{down} does not answer"):
            await check_externals([ext], lambda _line: None)

    async def test_up_goes_on_when_every_given_server_answers(self, listening: int) -> None:
        said: list[str] = []
        url = f"http://127.0.0.1:{listening}"
        await check_externals(
            [c.External("s3", "S3_ENDPOINT_URL", url, c.Health("tcp", url, 5))], said.append
        )
        assert said == [f"  s3             external {url} (S3_ENDPOINT_URL), answers"]
