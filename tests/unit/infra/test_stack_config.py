"""Specification of what `make up` and `make test` run: ports, generated configs, command lines."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from reelay_dev import config as c

ROOT = Path("/repo")


def cfg_from(env: dict[str, str]) -> c.StackConfig:
    return c.StackConfig.from_env(ROOT, env, python="/repo/.venv/bin/python")


def by_name(specs: list[c.ProcessSpec]) -> dict[str, c.ProcessSpec]:
    return {s.name: s for s in specs}


class TestPorts:
    def test_defaults_are_the_documented_ports(self) -> None:
        cfg = cfg_from({})
        assert cfg.kafka_bootstrap_servers == "127.0.0.1:9092"
        assert cfg.mongodb_uri == "mongodb://127.0.0.1:27017"
        assert cfg.sandbox_url == "http://127.0.0.1:8100"
        assert cfg.ingest_url == "http://127.0.0.1:8000"
        assert (cfg.uploader_ops_port, cfg.poller_ops_port) == (9101, 9102)

    def test_every_port_can_be_moved_by_env(self) -> None:
        cfg = cfg_from(
            {
                "KAFKA_PORT": "19500",
                "KAFKA_CONTROLLER_PORT": "19501",
                "FERRETDB_PORT": "19502",
                "SANDBOX_PORT": "19503",
                "INGEST_PORT": "19504",
                "UPLOADER_OPS_PORT": "19505",
                "POLLER_OPS_PORT": "19506",
            }
        )
        assert cfg.kafka_bootstrap_servers == "127.0.0.1:19500"
        assert cfg.mongodb_uri == "mongodb://127.0.0.1:19502"
        assert cfg.ports_by_name() == {
            "kafka": (19500, 19501),
            "ferretdb": (19502,),
            "sandbox": (19503,),
            "ingest": (19504,),
            "uploader": (19505,),
            "status-poller": (19506,),
        }

    @pytest.mark.parametrize("raw", ["abc", "0", "65536", "-1", "80.5"])
    def test_a_bad_port_is_refused_naming_the_variable(self, raw: str) -> None:
        with pytest.raises(c.ConfigError, match="KAFKA_PORT must be a port number"):
            cfg_from({"KAFKA_PORT": raw})

    def test_two_processes_on_one_port_are_refused(self) -> None:
        with pytest.raises(c.ConfigError, match="both configured on port 8000"):
            cfg_from({"SANDBOX_PORT": "8000"})

    def test_the_sandbox_port_may_clash_when_no_sandbox_runs(self) -> None:
        cfg = cfg_from({"SANDBOX_PORT": "8000", "TIKTOK_API_BASE_URL": "http://tiktok.example:9000"})
        assert not cfg.runs_sandbox


class TestTikTokEndpoint:
    def test_services_call_the_sandbox_by_default(self) -> None:
        cfg = cfg_from({})
        assert cfg.runs_sandbox
        stages = c.stack_stages(cfg)
        assert [s.name for s in stages[0]] == ["kafka", "ferretdb", "sandbox"]
        for spec in stages[1]:
            assert spec.env["TIKTOK_API_BASE_URL"] == "http://127.0.0.1:8100"

    def test_an_override_points_every_service_elsewhere_and_starts_no_sandbox(self) -> None:
        cfg = cfg_from({"TIKTOK_API_BASE_URL": "http://10.1.2.3:9000/"})
        assert not cfg.runs_sandbox
        stages = c.stack_stages(cfg)
        assert "sandbox" not in [s.name for stage in stages for s in stage]
        for spec in stages[1]:
            assert spec.env["TIKTOK_API_BASE_URL"] == "http://10.1.2.3:9000"

    @pytest.mark.parametrize("raw", ["ftp://x", "localhost:8100", "http://"])
    def test_an_override_that_is_not_an_http_url_is_refused(self, raw: str) -> None:
        with pytest.raises(c.ConfigError, match="TIKTOK_API_BASE_URL must be an http"):
            cfg_from({"TIKTOK_API_BASE_URL": raw})


class TestServiceEnvironment:
    def test_services_and_sandbox_share_client_credentials_and_webhooks_reach_ingest(self) -> None:
        cfg = cfg_from({"TIKTOK_CLIENT_KEY": "k1", "TIKTOK_CLIENT_SECRET": "s1"})
        specs = by_name([s for stage in c.stack_stages(cfg) for s in stage])
        sandbox = specs["sandbox"].env
        assert (sandbox["SANDBOX_CLIENT_KEY"], sandbox["SANDBOX_CLIENT_SECRET"]) == ("k1", "s1")
        assert sandbox["SANDBOX_WEBHOOK_URL"] == "http://127.0.0.1:8000/v1/webhooks/tiktok"
        for name in ("ingest", "uploader", "status-poller"):
            env = specs[name].env
            assert (env["TIKTOK_CLIENT_KEY"], env["TIKTOK_CLIENT_SECRET"]) == ("k1", "s1")
            assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"
            assert env["MONGODB_URI"] == "mongodb://127.0.0.1:27017"

    def test_services_run_as_modules_of_the_workspace_python_with_health_on_their_ports(self) -> None:
        cfg = cfg_from({})
        specs = by_name(c.service_specs(cfg))
        assert specs["ingest"].argv == ("/repo/.venv/bin/python", "-m", "reelay_ingest")
        assert specs["uploader"].argv[-1] == "reelay_uploader"
        assert specs["status-poller"].argv[-1] == "reelay_status_poller"
        assert specs["ingest"].health.target == "http://127.0.0.1:8000/healthz"
        assert specs["uploader"].health.target == "http://127.0.0.1:9101/healthz"
        assert specs["status-poller"].health.target == "http://127.0.0.1:9102/healthz"

    def test_the_uploader_gets_longer_than_its_chunk_grace_to_stop(self) -> None:
        specs = by_name(c.service_specs(cfg_from({})))
        assert specs["uploader"].stop_timeout_seconds > 30

    def test_every_process_carries_the_stack_id(self) -> None:
        cfg = cfg_from({})
        for spec in [s for stage in c.stack_stages(cfg) for s in stage]:
            assert spec.env[c.STACK_ID_ENV] == cfg.stack_id

    def test_the_demo_uses_the_first_configured_api_key(self) -> None:
        assert cfg_from({"INGEST_API_KEYS": " k-new , k-old"}).api_key == "k-new"
        assert cfg_from({}).api_key == "dev-api-key"


class TestKafka:
    def test_the_broker_is_one_kraft_node_bound_to_loopback(self) -> None:
        cfg = cfg_from({"KAFKA_PORT": "9500", "KAFKA_CONTROLLER_PORT": "9501"})
        props = dict(
            line.split("=", 1)
            for line in c.kafka_server_properties(cfg, Path("/data/k")).splitlines()
            if line and not line.startswith("#")
        )
        assert props["process.roles"] == "broker,controller"
        assert props["controller.quorum.voters"] == "1@127.0.0.1:9501"
        assert props["listeners"] == "PLAINTEXT://127.0.0.1:9500,CONTROLLER://127.0.0.1:9501"
        assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9500"
        assert props["log.dirs"] == "/data/k"
        for key in (
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "share.coordinator.state.topic.replication.factor",
        ):
            assert props[key] == "1"
        assert props["offsets.topic.num.partitions"] == "1"
        assert props["auto.create.topics.enable"] == "false"

    def test_the_broker_runs_with_a_modest_heap_its_log_config_and_the_installed_classpath(self) -> None:
        cfg = cfg_from({})
        spec = c.kafka_spec(cfg)
        props = cfg.run_dir / "conf" / "kafka" / "server.properties"
        log4j = cfg.run_dir / "conf" / "kafka" / "log4j2.xml"
        assert spec.argv[:3] == ("java", "-Xms256m", "-Xmx512m")
        assert f"-Dlog4j2.configurationFile={log4j}" in spec.argv
        assert spec.argv[-2:] == ("kafka.Kafka", str(props))
        assert "/repo/.cache/kafka/4.1.1/libs/*" in spec.argv
        assert set(spec.files) == {props, log4j}
        assert spec.marker == str(props)

    def test_storage_is_formatted_once_per_data_dir(self) -> None:
        cfg = cfg_from({})
        spec = c.kafka_spec(cfg)
        assert spec.prepare is not None
        assert spec.prepare[spec.prepare.index("kafka.tools.StorageTool") + 1] == "format"
        assert "--ignore-formatted" in spec.prepare
        assert spec.prepare_unless_exists == cfg.data_dir / "kafka" / "meta.properties"

    def test_a_cluster_id_is_22_url_safe_characters(self) -> None:
        cid = c.new_cluster_id()
        assert len(cid) == 22
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
        assert "=" not in cid

    def test_a_cluster_id_never_starts_with_a_dash(self) -> None:
        draws = iter([b"\xf8" + b"\0" * 15, b"\x01" * 16])  # the first encodes to "-A..."
        assert c.new_cluster_id(lambda: next(draws)) == base64.urlsafe_b64encode(
            b"\x01" * 16
        ).decode().rstrip("=")


class TestFerretDB:
    def test_runs_on_sqlite_in_the_data_dir_on_loopback(self) -> None:
        cfg = cfg_from({"FERRETDB_PORT": "27500"})
        spec = c.ferretdb_spec(cfg)
        data = cfg.data_dir / "ferretdb"
        assert spec.argv[0] == "/repo/.cache/ferretdb/v1.24.2/bin/ferretdb"
        assert f"--sqlite-url=file:{data}/" in spec.argv
        assert "--listen-addr=127.0.0.1:27500" in spec.argv
        assert "--telemetry=disable" in spec.argv
        assert spec.dirs == (data,)
        assert spec.health.kind == "mongo"


class TestTestInfrastructure:
    def test_uses_its_own_ports_and_dirs_beside_a_make_up_stack(self, tmp_path: Path) -> None:
        cfg = c.StackConfig.for_tests(ROOT, tmp_path, {}, python="py")
        assert cfg.kafka_bootstrap_servers == "127.0.0.1:29092"
        assert cfg.mongodb_uri == "mongodb://127.0.0.1:27217"
        assert cfg.run_dir == tmp_path / "run"
        assert cfg.data_dir == tmp_path / "data"
        assert cfg.stack_id != cfg_from({}).stack_id

    def test_starts_only_what_the_environment_does_not_provide(self, tmp_path: Path) -> None:
        cfg = c.StackConfig.for_tests(ROOT, tmp_path, {}, python="py")
        assert [s.name for s in c.infra_specs_for_tests(cfg, kafka=True, mongo=False)] == ["kafka"]
        assert [s.name for s in c.infra_specs_for_tests(cfg, kafka=False, mongo=True)] == ["ferretdb"]

    def test_its_ports_move_by_env(self, tmp_path: Path) -> None:
        cfg = c.StackConfig.for_tests(ROOT, tmp_path, {"TEST_KAFKA_PORT": "39092"}, python="py")
        assert cfg.kafka_bootstrap_servers == "127.0.0.1:39092"
