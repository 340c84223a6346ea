"""Specification of what `make up` and `make test` run: ports, generated configs, command lines."""

from __future__ import annotations

import base64
import json
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


class TestSeaweedFS:
    def test_make_up_runs_it_only_for_the_s3_blob_store_without_an_endpoint(self) -> None:
        def names(env: dict[str, str]) -> list[str]:
            return [s.name for s in c.stack_stages(cfg_from(env))[0]]

        assert c.SEAWEEDFS not in names({})
        assert c.SEAWEEDFS not in names({"REELAY_BLOB_STORE": "gridfs"})
        assert c.SEAWEEDFS in names({"REELAY_BLOB_STORE": "s3"})
        assert c.SEAWEEDFS not in names(
            {"REELAY_BLOB_STORE": "s3", "S3_ENDPOINT_URL": "http://s3.example:9000"}
        )

    def test_a_blob_store_that_does_not_exist_is_refused(self) -> None:
        with pytest.raises(c.ConfigError, match="REELAY_BLOB_STORE must be one of local, s3, gridfs"):
            cfg_from({"REELAY_BLOB_STORE": "ftp"})

    def test_services_are_told_the_blob_store_and_for_s3_its_signed_endpoint(self) -> None:
        local = c.service_env(cfg_from({}))
        assert local["REELAY_BLOB_STORE"] == "local"
        assert local["REELAY_BLOB_DIR"].endswith("/.run/data/blobs")
        assert "S3_ENDPOINT_URL" not in local
        s3 = c.service_env(cfg_from({"REELAY_BLOB_STORE": "s3"}))
        assert s3["S3_ENDPOINT_URL"] == "http://127.0.0.1:8333"
        assert (s3["REELAY_S3_ACCESS_KEY_ID"], s3["REELAY_S3_SECRET_ACCESS_KEY"]) == (
            c.DEV_S3_ACCESS_KEY,
            c.DEV_S3_SECRET_KEY,
        )

    def test_one_process_on_loopback_with_its_s3_identity_and_every_port_named(self, tmp_path: Path) -> None:
        env = {
            "TEST_S3_PORT": "18333",
            "TEST_SEAWEEDFS_MASTER_PORT": "19333",
            "TEST_SEAWEEDFS_VOLUME_PORT": "18080",
            "TEST_SEAWEEDFS_FILER_PORT": "18888",
        }
        cfg = c.StackConfig.for_tests(ROOT, tmp_path, env, python="py")
        spec = c.seaweedfs_spec(cfg)
        argv = spec.argv
        assert argv[0].endswith("/.cache/seaweedfs/" + c.SEAWEEDFS_VERSION + "/bin/weed")
        assert argv[1] == "server"
        for flag in ("-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3", "-s3.port=18333", "-master.port=19333"):
            assert flag in argv
        assert "-volume.port.grpc=28080" in argv  # gRPC ports set, not left to clash with another stack
        assert {"-s3.port.iceberg=0", "-s3.port.lance=0"} <= set(argv)  # 9101 is the uploader's ops port
        assert spec.ports == (18333, 19333, 18080, 18888, 28333, 29333, 28080, 28888)
        assert spec.health == c.Health("s3", "http://127.0.0.1:18333/reelay-test", 90.0)
        identities = json.loads(next(iter(spec.files.values())))
        assert identities["identities"][0]["credentials"] == [
            {"accessKey": c.DEV_S3_ACCESS_KEY, "secretKey": c.DEV_S3_SECRET_KEY}
        ]
        assert next(a for a in argv if a.startswith("-s3.config=")).endswith("/run/conf/seaweedfs/s3.json")

    def test_test_infra_starts_it_on_request_and_exports_its_endpoint(self, tmp_path: Path) -> None:
        from reelay_dev.orchestrate import exports_for_tests

        cfg = c.StackConfig.for_tests(ROOT, tmp_path, {}, python="py")
        assert [s.name for s in c.infra_specs_for_tests(cfg, kafka=False, mongo=False, s3=True)] == [
            "seaweedfs"
        ]
        exports = exports_for_tests(cfg, kafka=False, mongo=False, s3=True).splitlines()
        assert "export S3_ENDPOINT_URL=http://127.0.0.1:28333" in exports
        assert "export REELAY_S3_BUCKET=reelay-test" in exports
        assert f"export REELAY_S3_ACCESS_KEY_ID={c.DEV_S3_ACCESS_KEY}" in exports
