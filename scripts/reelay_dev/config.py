"""What the local stack runs: ports and paths from the environment, and one spec per process.

Pure functions and frozen dataclasses only (no I/O), so the unit tests in tests/unit/infra can
check every generated file and command line.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict, cast

DEV_API_KEY = "dev-api-key"
# The tenant `make up` makes for the demo, with a key of its own (reelay_dev.dev_tenant).
DEV_TENANT = "dev"
DEV_CLIENT_KEY = "dev-client-key"
DEV_CLIENT_SECRET = "dev-client-secret"  # noqa: S105  # the documented local placeholder, as in reelay_common.settings

# Names are part of the operator contract: .run/<name>.pid and .run/<name>.log.
KAFKA = "kafka"
FERRETDB = "ferretdb"
SEAWEEDFS = "seaweedfs"
SANDBOX = "sandbox"
INGEST = "ingest"
UPLOADER = "uploader"
STATUS_POLLER = "status-poller"
INFRA_NAMES = (KAFKA, FERRETDB, SEAWEEDFS)
ALL_NAMES = (KAFKA, FERRETDB, SEAWEEDFS, SANDBOX, INGEST, UPLOADER, STATUS_POLLER)

# The local S3 server's one identity: requests are signed as in production, with these dev keys.
DEV_S3_ACCESS_KEY = "reelay-dev-access-key"
DEV_S3_SECRET_KEY = "reelay-dev-secret-key"  # noqa: S105  # a documented local placeholder
DEV_S3_BUCKET = "reelay-videos"
BLOB_STORES = ("local", "s3", "gridfs")
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"  # as scripts/infra/install-seaweedfs.sh
GRPC_OFFSET = 10000  # SeaweedFS's gRPC port of each server: its HTTP port + 10000 (set explicitly)

# Set in every process we start; together with a marker in its command line it tells our process
# from an unrelated one that happens to have reused a pid.
STACK_ID_ENV = "REELAY_STACK_ID"


class ConfigError(ValueError):
    """The environment asks for something the stack cannot do (bad port, clashing ports, ...)."""


HealthKind = Literal["kafka", "mongo", "http", "s3", "tcp"]


@dataclass(frozen=True)
class Health:
    """How to tell the process is ready: a Kafka metadata call, a Mongo ping, an HTTP 200, an S3
    endpoint that lets the dev identity create the bucket and write to it, or (for a server the
    stack does not run, whose keys it does not hold) a port that accepts connections."""

    kind: HealthKind
    target: str
    timeout_seconds: float


@dataclass(frozen=True)
class ProcessSpec:
    """One background process of the stack."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    marker: str  # a string in argv that only our process of this name has
    ports: tuple[int, ...]  # what it listens on (checked for clashes before start)
    health: Health
    stop_timeout_seconds: float
    files: Mapping[Path, str] = field(default_factory=dict)  # config files written before start
    dirs: tuple[Path, ...] = ()  # directories created before start
    # Kafka needs its storage formatted once per data dir before the first start.
    prepare: tuple[str, ...] | None = None
    prepare_unless_exists: Path | None = None


def parse_port(env: Mapping[str, str], name: str, default: int) -> int:
    """The port named by env var `name`, or `default`; a clear error for anything but 1-65535."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port number (1-65535), got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be a port number (1-65535), got {raw!r}")
    return port


def parse_base_url(env: Mapping[str, str], name: str) -> str | None:
    """An http(s) base URL from env var `name` without its trailing slash, or None when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")) or len(raw.split("://", 1)[1].strip("/")) == 0:
        raise ConfigError(f"{name} must be an http(s) URL such as http://127.0.0.1:8100, got {raw!r}")
    return raw.rstrip("/")


class Tooling(TypedDict):
    """What both stacks read alike from the environment: versions, the JVM, Kafka's heap."""

    kafka_version: str
    kafka_heap: tuple[str, ...]
    ferretdb_version: str
    seaweedfs_version: str
    java: str


def tooling_from(env: Mapping[str, str]) -> Tooling:
    """KAFKA_VERSION, KAFKA_HEAP_OPTS, FERRETDB_VERSION, SEAWEEDFS_VERSION and JAVA, or their defaults."""
    return Tooling(
        kafka_version=env.get("KAFKA_VERSION") or "4.1.1",
        kafka_heap=tuple((env.get("KAFKA_HEAP_OPTS") or "-Xms256m -Xmx512m").split()),
        ferretdb_version=env.get("FERRETDB_VERSION") or "v1.24.2",
        seaweedfs_version=env.get("SEAWEEDFS_VERSION") or SEAWEEDFS_VERSION,
        java=env.get("JAVA") or "java",
    )


class InfraPorts(TypedDict):
    """The ports of Kafka, FerretDB and SeaweedFS."""

    kafka_port: int
    kafka_controller_port: int
    ferretdb_port: int
    s3_port: int
    seaweedfs_master_port: int
    seaweedfs_volume_port: int
    seaweedfs_filer_port: int


# Each infrastructure port: (`make up`'s variable, its default, `make test`'s variable, its default).
INFRA_PORT_VARS: dict[str, tuple[str, int, str, int]] = {
    "kafka_port": ("KAFKA_PORT", 9092, "TEST_KAFKA_PORT", 29092),
    "kafka_controller_port": ("KAFKA_CONTROLLER_PORT", 9093, "TEST_KAFKA_CONTROLLER_PORT", 29093),
    "ferretdb_port": ("FERRETDB_PORT", 27017, "TEST_FERRETDB_PORT", 27217),
    "s3_port": ("SEAWEEDFS_S3_PORT", 8333, "TEST_S3_PORT", 28333),
    "seaweedfs_master_port": ("SEAWEEDFS_MASTER_PORT", 9333, "TEST_SEAWEEDFS_MASTER_PORT", 29333),
    "seaweedfs_volume_port": ("SEAWEEDFS_VOLUME_PORT", 8080, "TEST_SEAWEEDFS_VOLUME_PORT", 28080),
    "seaweedfs_filer_port": ("SEAWEEDFS_FILER_PORT", 8888, "TEST_SEAWEEDFS_FILER_PORT", 28888),
}


def infra_ports(env: Mapping[str, str], *, for_tests: bool) -> InfraPorts:
    """The infrastructure's ports for `make up` or (with `for_tests`) for `make test`."""
    ports = {}
    for field_name, (up_var, up_default, test_var, test_default) in INFRA_PORT_VARS.items():
        var, default = (test_var, test_default) if for_tests else (up_var, up_default)
        ports[field_name] = parse_port(env, var, default)
    return cast(InfraPorts, ports)  # INFRA_PORT_VARS names every key of InfraPorts


def parse_servers(env: Mapping[str, str], name: str) -> str | None:
    """A server address the stack is told to use instead of starting its own, or None when unset."""
    raw = env.get(name, "").strip()
    return raw or None


@dataclass(frozen=True)
class StackConfig:
    """Paths and ports of one local stack (`make up`) or of the test infrastructure (`make test`)."""

    root: Path
    run_dir: Path
    data_dir: Path
    python: str
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    ferretdb_port: int = 27017
    sandbox_port: int = 8100
    ingest_port: int = 8000
    uploader_ops_port: int = 9101
    poller_ops_port: int = 9102
    s3_port: int = 8333
    seaweedfs_master_port: int = 9333
    seaweedfs_volume_port: int = 8080
    seaweedfs_filer_port: int = 8888
    blob_store: str = "local"
    # Servers named by KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI / S3_ENDPOINT_URL: used, never started
    # or stopped by this stack.
    external_kafka: str | None = None
    external_mongo: str | None = None
    external_s3_url: str | None = None
    s3_bucket: str = DEV_S3_BUCKET
    external_tiktok_url: str | None = None
    kafka_version: str = "4.1.1"
    kafka_heap: tuple[str, ...] = ("-Xms256m", "-Xmx512m")
    ferretdb_version: str = "v1.24.2"
    seaweedfs_version: str = SEAWEEDFS_VERSION
    java: str = "java"
    client_key: str = DEV_CLIENT_KEY
    client_secret: str = DEV_CLIENT_SECRET
    api_key: str = DEV_API_KEY

    @classmethod
    def from_env(cls, root: Path, env: Mapping[str, str], *, python: str) -> StackConfig:
        """The `make up` stack, with every port and version overridable by env var; the servers
        KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI and S3_ENDPOINT_URL name are used instead of our own."""
        run_dir = Path(env.get("REELAY_RUN_DIR") or root / ".run")
        cfg = cls(
            root=root,
            run_dir=run_dir,
            data_dir=run_dir / "data",
            python=python,
            sandbox_port=parse_port(env, "SANDBOX_PORT", 8100),
            ingest_port=parse_port(env, "INGEST_PORT", 8000),
            uploader_ops_port=parse_port(env, "UPLOADER_OPS_PORT", 9101),
            poller_ops_port=parse_port(env, "POLLER_OPS_PORT", 9102),
            blob_store=parse_blob_store(env),
            external_kafka=parse_servers(env, "KAFKA_BOOTSTRAP_SERVERS"),
            external_mongo=parse_mongo_uri(env),
            external_s3_url=parse_base_url(env, "S3_ENDPOINT_URL"),
            s3_bucket=env.get("REELAY_S3_BUCKET") or DEV_S3_BUCKET,
            external_tiktok_url=parse_base_url(env, "TIKTOK_API_BASE_URL"),
            client_key=env.get("TIKTOK_CLIENT_KEY") or DEV_CLIENT_KEY,
            client_secret=env.get("TIKTOK_CLIENT_SECRET") or DEV_CLIENT_SECRET,
            api_key=first_api_key(env.get("INGEST_API_KEYS")) or DEV_API_KEY,
            **infra_ports(env, for_tests=False),
            **tooling_from(env),
        )
        cfg.check_ports()
        return cfg

    @classmethod
    def for_tests(cls, root: Path, base_dir: Path, env: Mapping[str, str], *, python: str) -> StackConfig:
        """The Kafka, FerretDB and SeaweedFS that `make test` runs beside any `make up` stack
        (blob store s3: SeaweedFS is part of it, started with --s3)."""
        cfg = cls(
            root=root,
            run_dir=base_dir / "run",
            data_dir=base_dir / "data",
            python=python,
            blob_store="s3",
            s3_bucket="reelay-test",
            **infra_ports(env, for_tests=True),
            **tooling_from(env),
        )
        cfg.check_ports(names=INFRA_NAMES)
        return cfg

    # -- derived addresses -------------------------------------------------------------------
    @property
    def stack_id(self) -> str:
        """Identifies this stack's processes (one per run dir)."""
        return str(self.run_dir.resolve())

    @property
    def kafka_bootstrap_servers(self) -> str:
        """Where clients reach the broker: KAFKA_BOOTSTRAP_SERVERS if set, else our own Kafka."""
        return self.external_kafka or f"{self.host}:{self.kafka_port}"

    @property
    def mongodb_uri(self) -> str:
        """Where clients reach the Mongo-wire server: MONGODB_URI if set, else our own FerretDB."""
        return self.external_mongo or f"mongodb://{self.host}:{self.ferretdb_port}"

    @property
    def runs_kafka(self) -> bool:
        """`make up` starts Kafka unless KAFKA_BOOTSTRAP_SERVERS names one."""
        return self.external_kafka is None

    @property
    def runs_ferretdb(self) -> bool:
        """`make up` starts FerretDB unless MONGODB_URI names a server."""
        return self.external_mongo is None

    @property
    def s3_endpoint_url(self) -> str:
        """Where clients reach S3: S3_ENDPOINT_URL if set, else the local SeaweedFS."""
        return self.external_s3_url or f"http://{self.host}:{self.s3_port}"

    @property
    def runs_seaweedfs(self) -> bool:
        """`make up` starts SeaweedFS only when the blob store is s3 and no S3_ENDPOINT_URL is given."""
        return self.blob_store == "s3" and self.external_s3_url is None

    @property
    def seaweedfs_ports(self) -> tuple[int, ...]:
        """Every port SeaweedFS listens on: each server's HTTP port and its gRPC port."""
        http = (
            self.s3_port,
            self.seaweedfs_master_port,
            self.seaweedfs_volume_port,
            self.seaweedfs_filer_port,
        )
        return (*http, *(p + GRPC_OFFSET for p in http))

    @property
    def sandbox_url(self) -> str:
        """The local TikTok sandbox."""
        return f"http://{self.host}:{self.sandbox_port}"

    @property
    def ingest_url(self) -> str:
        """The ingest HTTP API."""
        return f"http://{self.host}:{self.ingest_port}"

    @property
    def tiktok_api_base_url(self) -> str:
        """What the services call: the sandbox unless TIKTOK_API_BASE_URL points elsewhere."""
        return self.external_tiktok_url or self.sandbox_url

    @property
    def runs_sandbox(self) -> bool:
        """False when TIKTOK_API_BASE_URL points the stack at another TikTok endpoint."""
        return self.external_tiktok_url is None

    def pid_file(self, name: str) -> Path:
        """`.run/<name>.pid`."""
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        """`.run/<name>.log`."""
        return self.run_dir / f"{name}.log"

    @property
    def kafka_libs(self) -> Path:
        """The classpath gathered by scripts/infra/install-kafka.sh."""
        return self.root / ".cache" / "kafka" / self.kafka_version / "libs"

    @property
    def ferretdb_bin(self) -> Path:
        """The binary built by scripts/infra/install-ferretdb.sh."""
        return self.root / ".cache" / "ferretdb" / self.ferretdb_version / "bin" / "ferretdb"

    @property
    def seaweedfs_bin(self) -> Path:
        """The binary built by scripts/infra/install-seaweedfs.sh."""
        return self.root / ".cache" / "seaweedfs" / self.seaweedfs_version / "bin" / "weed"

    def ports_by_name(self) -> dict[str, tuple[int, ...]]:
        """Every port each process listens on (Kafka's, FerretDB's and SeaweedFS's only when this
        stack runs them)."""
        infra = {
            KAFKA: ((self.kafka_port, self.kafka_controller_port), self.runs_kafka),
            FERRETDB: ((self.ferretdb_port,), self.runs_ferretdb),
            SEAWEEDFS: (self.seaweedfs_ports, self.runs_seaweedfs),
        }
        return {name: ports for name, (ports, runs) in infra.items() if runs} | {
            SANDBOX: (self.sandbox_port,),
            INGEST: (self.ingest_port,),
            UPLOADER: (self.uploader_ops_port,),
            STATUS_POLLER: (self.poller_ops_port,),
        }

    def check_ports(self, names: tuple[str, ...] = ALL_NAMES) -> None:
        """Refuse two processes configured on one port."""
        seen: dict[int, str] = {}
        for name, ports in self.ports_by_name().items():
            if name not in names or (name == SANDBOX and not self.runs_sandbox):
                continue
            for port in ports:
                if port in seen:
                    raise ConfigError(f"{name} and {seen[port]} are both configured on port {port}")
                seen[port] = name


def parse_mongo_uri(env: Mapping[str, str]) -> str | None:
    """MONGODB_URI as the stack's Mongo-wire server, or None when unset; a clear error for a non-URI."""
    uri = parse_servers(env, "MONGODB_URI")
    if uri is not None and not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(f"MONGODB_URI must be a mongodb:// or mongodb+srv:// URI, got {redact(uri)!r}")
    return uri


def redact(address: str) -> str:
    """An address fit to print: the password of a `scheme://user:password@host` URI is replaced."""
    scheme, sep, rest = address.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return address
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


def parse_blob_store(env: Mapping[str, str]) -> str:
    """REELAY_BLOB_STORE for `make up`: local (its default), s3 or gridfs."""
    raw = (env.get("REELAY_BLOB_STORE") or "local").strip()
    if raw not in BLOB_STORES:
        raise ConfigError(f"REELAY_BLOB_STORE must be one of {', '.join(BLOB_STORES)}, got {raw!r}")
    return raw


def first_api_key(raw: str | None) -> str | None:
    """The first key of a comma-separated INGEST_API_KEYS value (the one the demo uses)."""
    if not raw:
        return None
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    return keys[0] if keys else None


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id as `kafka-storage random-uuid` makes it: URL-safe base64 of 16 random bytes.

    Kafka's own generator rejects ids starting with '-' (they read as command-line flags), so do we.
    """
    while True:
        cid = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def kafka_server_properties(cfg: StackConfig, log_dir: Path) -> str:
    """A combined broker+controller (KRaft, one node) config bound to `cfg.host` only."""
    host, port, cport = cfg.host, cfg.kafka_port, cfg.kafka_controller_port
    lines = [
        "# Generated by scripts/stack.py; edits are overwritten on the next start.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{cport}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={log_dir}",
        # One node: every internal topic has one replica, and the default 50 offsets partitions
        # make the first consumer group join slow.
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Services create their topics (ensure_topics); a typo must not silently create a topic.
        "auto.create.topics.enable=false",
    ]
    return "\n".join(lines) + "\n"


KAFKA_LOG4J2_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/stack.py: the broker logs warnings, plus the line saying it started. -->
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="STDOUT"/></Root>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
  </Loggers>
</Configuration>
"""


def kafka_spec(cfg: StackConfig) -> ProcessSpec:
    """The broker: generated config, storage formatted once, modest heap."""
    conf_dir = cfg.run_dir / "conf" / KAFKA
    props = conf_dir / "server.properties"
    log4j = conf_dir / "log4j2.xml"
    log_dir = cfg.data_dir / KAFKA
    classpath = f"{cfg.kafka_libs}/*"
    jvm = (cfg.java, *cfg.kafka_heap, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath)
    return ProcessSpec(
        name=KAFKA,
        argv=(*jvm, "kafka.Kafka", str(props)),
        env={STACK_ID_ENV: cfg.stack_id},
        marker=str(props),
        ports=(cfg.kafka_port, cfg.kafka_controller_port),
        health=Health("kafka", cfg.kafka_bootstrap_servers, 120.0),
        stop_timeout_seconds=30.0,
        files={props: kafka_server_properties(cfg, log_dir), log4j: KAFKA_LOG4J2_XML},
        prepare=(
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(props),
            "--ignore-formatted",
        ),
        prepare_unless_exists=log_dir / "meta.properties",
    )


def ferretdb_spec(cfg: StackConfig) -> ProcessSpec:
    """FerretDB v1 on SQLite, listening on `cfg.host` only."""
    data = cfg.data_dir / FERRETDB
    state_flag = f"--state-dir={data}"
    return ProcessSpec(
        name=FERRETDB,
        argv=(
            str(cfg.ferretdb_bin),
            "--handler=sqlite",
            f"--sqlite-url=file:{data}/",  # FerretDB wants the directory URL to end in '/'
            f"--listen-addr={cfg.host}:{cfg.ferretdb_port}",
            state_flag,
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=warn",
        ),
        env={STACK_ID_ENV: cfg.stack_id},
        marker=state_flag,
        ports=(cfg.ferretdb_port,),
        health=Health("mongo", cfg.mongodb_uri, 60.0),
        stop_timeout_seconds=15.0,
        dirs=(data,),
    )


def s3_identities_json() -> str:
    """SeaweedFS's `-s3.config`: one identity with the dev keys, so every request is signed."""
    identity = {
        "name": "reelay",
        "credentials": [{"accessKey": DEV_S3_ACCESS_KEY, "secretKey": DEV_S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    return json.dumps({"identities": [identity]}, indent=2) + "\n"


def seaweedfs_spec(cfg: StackConfig) -> ProcessSpec:
    """SeaweedFS (master, volume, filer and the S3 gateway in one process) on `cfg.host` only."""
    data = cfg.data_dir / SEAWEEDFS
    identities = cfg.run_dir / "conf" / SEAWEEDFS / "s3.json"
    dir_flag = f"-dir={data}"
    grpc = GRPC_OFFSET
    return ProcessSpec(
        name=SEAWEEDFS,
        argv=(
            str(cfg.seaweedfs_bin),
            "server",
            dir_flag,
            f"-ip={cfg.host}",
            f"-ip.bind={cfg.host}",
            f"-master.port={cfg.seaweedfs_master_port}",
            f"-master.port.grpc={cfg.seaweedfs_master_port + grpc}",
            f"-volume.port={cfg.seaweedfs_volume_port}",
            f"-volume.port.grpc={cfg.seaweedfs_volume_port + grpc}",
            f"-filer.port={cfg.seaweedfs_filer_port}",
            f"-filer.port.grpc={cfg.seaweedfs_filer_port + grpc}",
            "-s3",
            f"-s3.port={cfg.s3_port}",
            f"-s3.port.grpc={cfg.s3_port + grpc}",
            f"-s3.config={identities}",
            # Off: the Iceberg and Lance catalogs would take 8181 and 9101 (the uploader's ops port).
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=1024",  # a laptop's disk: small volumes, grown on demand
        ),
        env={STACK_ID_ENV: cfg.stack_id},
        marker=dir_flag,
        ports=cfg.seaweedfs_ports,
        health=Health("s3", f"{cfg.s3_endpoint_url}/{cfg.s3_bucket}", 90.0),  # the bucket's path-style URL
        stop_timeout_seconds=15.0,
        files={identities: s3_identities_json()},
        dirs=(data,),
    )


def blob_env(cfg: StackConfig) -> dict[str, str]:
    """What the services are told about the blob store `make up` runs with (REELAY_BLOB_STORE).

    An external S3's keys and region (REELAY_S3_*) reach the services from the environment as given.
    """
    env = {"REELAY_BLOB_STORE": cfg.blob_store, "REELAY_BLOB_DIR": str(cfg.data_dir / "blobs")}
    if cfg.blob_store == "s3":
        env |= {"S3_ENDPOINT_URL": cfg.s3_endpoint_url, "REELAY_S3_BUCKET": cfg.s3_bucket}
    if cfg.runs_seaweedfs:
        env |= {
            "REELAY_S3_ACCESS_KEY_ID": DEV_S3_ACCESS_KEY,
            "REELAY_S3_SECRET_ACCESS_KEY": DEV_S3_SECRET_KEY,
        }
    return env


def service_env(cfg: StackConfig) -> dict[str, str]:
    """What every Reelay service is told: where Kafka, Mongo, TikTok and the blobs are, and its own ports."""
    return {
        **blob_env(cfg),
        STACK_ID_ENV: cfg.stack_id,
        "KAFKA_BOOTSTRAP_SERVERS": cfg.kafka_bootstrap_servers,
        "MONGODB_URI": cfg.mongodb_uri,
        "TIKTOK_API_BASE_URL": cfg.tiktok_api_base_url,
        "TIKTOK_CLIENT_KEY": cfg.client_key,
        "TIKTOK_CLIENT_SECRET": cfg.client_secret,
        "INGEST_HOST": cfg.host,
        "INGEST_PORT": str(cfg.ingest_port),
        # Where TikTok (the sandbox) sends a connecting user back: ingest's own callback.
        "INGEST_OAUTH_REDIRECT_URI": f"{cfg.ingest_url}/v1/oauth/callback",
        "UPLOADER_OPS_HOST": cfg.host,
        "UPLOADER_OPS_PORT": str(cfg.uploader_ops_port),
        "POLLER_OPS_HOST": cfg.host,
        "POLLER_OPS_PORT": str(cfg.poller_ops_port),
    }


def sandbox_spec(cfg: StackConfig) -> ProcessSpec:
    """The TikTok sandbox, with the same client credentials as the services and webhooks to ingest."""
    env = {
        STACK_ID_ENV: cfg.stack_id,
        "SANDBOX_HOST": cfg.host,
        "SANDBOX_PORT": str(cfg.sandbox_port),
        "SANDBOX_PUBLIC_BASE_URL": cfg.sandbox_url,
        "SANDBOX_CLIENT_KEY": cfg.client_key,
        "SANDBOX_CLIENT_SECRET": cfg.client_secret,
        "SANDBOX_WEBHOOK_URL": f"{cfg.ingest_url}/v1/webhooks/tiktok",
    }
    return _python_spec(
        cfg, SANDBOX, "tiktok_sandbox", env, (cfg.sandbox_port,), f"{cfg.sandbox_url}/healthz"
    )


def _python_spec(
    cfg: StackConfig,
    name: str,
    module: str,
    env: Mapping[str, str],
    ports: tuple[int, ...],
    health_url: str,
    stop_timeout: float = 20.0,
) -> ProcessSpec:
    return ProcessSpec(
        name=name,
        argv=(cfg.python, "-m", module),
        env=env,
        marker=module,
        ports=ports,
        health=Health("http", health_url, 90.0),
        stop_timeout_seconds=stop_timeout,
    )


def service_specs(cfg: StackConfig) -> list[ProcessSpec]:
    """ingest, uploader and status-poller, all told the same addresses."""
    env = service_env(cfg)
    host = cfg.host
    return [
        _python_spec(cfg, INGEST, "reelay_ingest", env, (cfg.ingest_port,), f"{cfg.ingest_url}/healthz"),
        # The uploader finishes (or hands back) the chunk in flight on SIGTERM: give it the
        # consumer's 30 s shutdown grace and some margin before SIGKILL.
        _python_spec(
            cfg,
            UPLOADER,
            "reelay_uploader",
            env,
            (cfg.uploader_ops_port,),
            f"http://{host}:{cfg.uploader_ops_port}/healthz",
            stop_timeout=45.0,
        ),
        _python_spec(
            cfg,
            STATUS_POLLER,
            "reelay_status_poller",
            env,
            (cfg.poller_ops_port,),
            f"http://{host}:{cfg.poller_ops_port}/healthz",
            stop_timeout=45.0,
        ),
    ]


def stack_stages(cfg: StackConfig) -> list[list[ProcessSpec]]:
    """`make up` in stages: each stage starts together and must be healthy before the next.

    Only what is missing: no Kafka, FerretDB or SeaweedFS where the environment names a server
    (see `externals`), no sandbox where TIKTOK_API_BASE_URL names another TikTok.
    """
    wanted = (
        (cfg.runs_kafka, kafka_spec),
        (cfg.runs_ferretdb, ferretdb_spec),
        (cfg.runs_seaweedfs, seaweedfs_spec),
        (cfg.runs_sandbox, sandbox_spec),
    )
    return [[make(cfg) for runs, make in wanted if runs], service_specs(cfg)]


@dataclass(frozen=True)
class External:
    """A server the stack uses but did not start (so `make down` never stops it)."""

    name: str  # kafka, mongodb or s3: what it serves, whichever program it is
    env_var: str  # the variable that named it
    address: str
    health: Health

    @property
    def shown(self) -> str:
        """The address without its password."""
        return redact(self.address)


def externals_json(found: list[External]) -> str:
    """What `make up` records in .run/externals.json, so `make status` can say what the stack uses."""
    rows = [
        {"name": e.name, "env_var": e.env_var, "address": e.address, "health": e.health.kind} for e in found
    ]
    return json.dumps(rows, indent=2) + "\n"


def externals_from_json(text: str) -> list[External] | None:
    """The servers recorded by `externals_json`, or None when the text is not such a record."""
    try:
        rows = json.loads(text)
        return [
            External(row["name"], row["env_var"], row["address"], Health(row["health"], row["address"], 30.0))
            for row in rows
        ]
    except (ValueError, TypeError, KeyError):
        return None


def externals(cfg: StackConfig) -> list[External]:
    """The servers KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI and (with REELAY_BLOB_STORE=s3)
    S3_ENDPOINT_URL name, each with how to tell that it answers."""
    found = []
    if cfg.external_kafka is not None:
        kafka = cfg.external_kafka
        found.append(External("kafka", "KAFKA_BOOTSTRAP_SERVERS", kafka, Health("kafka", kafka, 30.0)))
    if cfg.external_mongo is not None:
        mongo = cfg.external_mongo
        found.append(External("mongodb", "MONGODB_URI", mongo, Health("mongo", mongo, 30.0)))
    if cfg.blob_store == "s3" and cfg.external_s3_url is not None:
        # Its keys are the operator's (REELAY_S3_*), not the dev identity: check it answers, no more.
        s3 = cfg.external_s3_url
        found.append(External("s3", "S3_ENDPOINT_URL", s3, Health("tcp", s3, 30.0)))
    return found


def infra_specs_for_tests(
    cfg: StackConfig, *, kafka: bool, mongo: bool, s3: bool = False
) -> list[ProcessSpec]:
    """The Kafka, FerretDB and/or SeaweedFS that `make test` needs."""
    specs = []
    if kafka:
        specs.append(kafka_spec(cfg))
    if mongo:
        specs.append(ferretdb_spec(cfg))
    if s3:
        specs.append(seaweedfs_spec(cfg))
    return specs
