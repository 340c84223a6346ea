"""Specification of deploy/ and docker-compose.yml, checked without a cluster or Docker.

Docker and kubectl do not run on the development machines, so these tests hold the manifests to
what the code needs: every env var they set is one a settings class reads, every probe hits a
route the process serves on a port it exposes, every reference (files, ConfigMaps, Secrets,
console scripts, workspace members) resolves.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings
from reelay_dev import config as c
from reelay_ingest.settings import IngestSettings
from reelay_status_poller.settings import PollerSettings
from reelay_uploader.settings import UploaderSettings
from tiktok_sandbox.settings import SandboxSettings

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("staging", "production")
SETTINGS_BY_COMMAND: dict[str, type[BaseSettings]] = {
    "reelay-ingest": IngestSettings,
    "reelay-uploader": UploaderSettings,
    "reelay-status-poller": PollerSettings,
    "tiktok-sandbox": SandboxSettings,
}
SECRET_NAME = "reelay-secrets"  # created by the operator, documented in base/configmap.yaml
SECRET_KEYS = {
    "MONGODB_URI",
    "TIKTOK_CLIENT_SECRET",
    "REELAY_TOKEN_ENCRYPTION_KEY",
    "REELAY_TOKEN_ENCRYPTION_KEYS",
    "INGEST_API_KEYS",
}


def env_names(settings: type[BaseSettings]) -> set[str]:
    """Every env var a settings class reads (aliases as given, other fields with the prefix)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias.upper() if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects of a kustomization: resources, recursively, with ConfigMap patches merged.

    Enough of kustomize to check references and settings; JSON6902 replica patches are ignored.
    """
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        path = directory / res
        objects += kustomize(path) if path.is_dir() else load_docs(path)
    for patch in kust.get("patches", []):
        if "path" not in patch:
            continue
        for doc in load_docs(directory / patch["path"]):
            target = find(objects, doc["kind"], doc["metadata"]["name"])
            target.setdefault("data", {}).update(doc.get("data", {}))
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def deployments(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (o for o in objects if o["kind"] == "Deployment")


def console_scripts() -> set[str]:
    scripts: set[str] = set()
    for pyproject in ROOT.glob("*/*/pyproject.toml"):
        scripts |= set(tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {}))
    return scripts


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(K8S / "overlays" / request.param)


class TestKustomizations:
    def test_every_referenced_file_exists(self) -> None:
        for kust_file in K8S.rglob("kustomization.yaml"):
            kust = yaml.safe_load(kust_file.read_text())
            refs = kust.get("resources", []) + [p["path"] for p in kust.get("patches", []) if "path" in p]
            for ref in refs:
                assert (kust_file.parent / ref).exists(), f"{kust_file}: {ref} does not exist"

    def test_every_yaml_file_parses_and_names_its_kind(self) -> None:
        files = list(K8S.rglob("*.yaml"))
        assert len(files) >= 8
        for path in files:
            for doc in load_docs(path):
                assert "kind" in doc, path

    def test_staging_talks_to_the_sandbox_and_production_to_tiktok(self) -> None:
        staging = find(kustomize(K8S / "overlays" / "staging"), "ConfigMap", "reelay-config")["data"]
        production = find(kustomize(K8S / "overlays" / "production"), "ConfigMap", "reelay-config")["data"]
        assert staging["TIKTOK_API_BASE_URL"] == "http://tiktok-sandbox:8100"
        assert production["TIKTOK_API_BASE_URL"] == "https://open.tiktokapis.com"

    def test_each_overlay_picks_the_image_registry_and_tag(self) -> None:
        base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
        # An `images` entry in the base would rename `reelay` before the overlays could retag it.
        assert "images" not in base
        for name in OVERLAYS:
            kust = yaml.safe_load((K8S / "overlays" / name / "kustomization.yaml").read_text())
            [image] = kust["images"]
            assert image["name"] == "reelay"
            assert image["newName"]
            assert image["newTag"]

    def test_the_sandbox_runs_only_in_staging(self) -> None:
        staging = [d["metadata"]["name"] for d in deployments(kustomize(K8S / "overlays" / "staging"))]
        production = [d["metadata"]["name"] for d in deployments(kustomize(K8S / "overlays" / "production"))]
        assert "tiktok-sandbox" in staging
        assert "tiktok-sandbox" not in production


class TestDeployments:
    def test_run_every_service(self, overlay: list[dict[str, Any]]) -> None:
        names = {d["metadata"]["name"] for d in deployments(overlay)}
        assert {"reelay-ingest", "reelay-uploader", "reelay-status-poller"} <= names

    def test_selectors_match_their_pods(self, overlay: list[dict[str, Any]]) -> None:
        for dep in deployments(overlay):
            selector = dep["spec"]["selector"]["matchLabels"]
            labels = dep["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), dep["metadata"]["name"]

    def test_containers_run_a_console_script_of_the_workspace(self, overlay: list[dict[str, Any]]) -> None:
        scripts = console_scripts()
        for dep in deployments(overlay):
            for container in dep["spec"]["template"]["spec"]["containers"]:
                assert container["command"][0] in scripts & set(SETTINGS_BY_COMMAND)

    def test_probes_hit_health_routes_on_exposed_ports(self, overlay: list[dict[str, Any]]) -> None:
        for dep in deployments(overlay):
            for container in dep["spec"]["template"]["spec"]["containers"]:
                ports = {p["name"] for p in container["ports"]}
                live = container["livenessProbe"]["httpGet"]
                ready = container["readinessProbe"]["httpGet"]
                assert live["path"] == "/healthz"
                if container["command"][0] != "tiktok-sandbox":  # the sandbox has no /readyz
                    assert ready["path"] == "/readyz"
                assert {live["port"], ready["port"]} <= ports

    def test_containers_have_resource_requests_and_limits(self, overlay: list[dict[str, Any]]) -> None:
        for dep in deployments(overlay):
            for container in dep["spec"]["template"]["spec"]["containers"]:
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"])
                assert "memory" in resources["limits"]

    def test_the_uploader_has_time_to_finish_a_chunk_before_it_is_killed(
        self, overlay: list[dict[str, Any]]
    ) -> None:
        dep = find(overlay, "Deployment", "reelay-uploader")
        container = dep["spec"]["template"]["spec"]["containers"][0]
        grace = {e["name"]: e.get("value") for e in container["env"]}["UPLOADER_SHUTDOWN_GRACE_SECONDS"]
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= float(grace) + 15

    def test_env_vars_are_ones_the_service_reads(self, overlay: list[dict[str, Any]]) -> None:
        config = find(overlay, "ConfigMap", "reelay-config")["data"]
        for dep in deployments(overlay):
            for container in dep["spec"]["template"]["spec"]["containers"]:
                known = env_names(SETTINGS_BY_COMMAND[container["command"][0]])
                names = {e["name"] for e in container.get("env", [])}
                if container.get("envFrom"):
                    names |= set(config)
                assert names - known == set(), f"{dep['metadata']['name']} sets vars nobody reads"

    def test_config_and_secret_references_resolve(self, overlay: list[dict[str, Any]]) -> None:
        config = find(overlay, "ConfigMap", "reelay-config")["data"]
        for dep in deployments(overlay):
            for container in dep["spec"]["template"]["spec"]["containers"]:
                for src in container.get("envFrom", []):
                    assert src["configMapRef"]["name"] == "reelay-config"
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {})
                    if "secretKeyRef" in ref:
                        assert ref["secretKeyRef"]["name"] == SECRET_NAME
                        assert ref["secretKeyRef"]["key"] in SECRET_KEYS
                    if "configMapKeyRef" in ref:
                        assert ref["configMapKeyRef"]["key"] in config

    def test_no_secret_sits_in_the_config_map(self, overlay: list[dict[str, Any]]) -> None:
        config = find(overlay, "ConfigMap", "reelay-config")["data"]
        assert set(config) & SECRET_KEYS == set()

    def test_services_select_pods_and_named_ports(self, overlay: list[dict[str, Any]]) -> None:
        for svc in (o for o in overlay if o["kind"] == "Service"):
            dep = next(
                d
                for d in deployments(overlay)
                if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
            )
            ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


class TestCompose:
    def test_runs_kafka_mongo_sandbox_and_the_services(self, compose: dict[str, Any]) -> None:
        assert set(compose["services"]) == {
            "kafka",
            "mongo",
            "sandbox",
            "ingest",
            "uploader",
            "status-poller",
        }
        assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
        assert compose["services"]["mongo"]["image"] == "mongo:7"

    def test_every_service_has_a_healthcheck(self, compose: dict[str, Any]) -> None:
        for name, svc in compose["services"].items():
            assert svc["healthcheck"]["test"], name

    def test_services_wait_for_healthy_infrastructure(self, compose: dict[str, Any]) -> None:
        for name in ("ingest", "uploader", "status-poller"):
            deps = compose["services"][name]["depends_on"]
            assert deps == {
                "kafka": {"condition": "service_healthy"},
                "mongo": {"condition": "service_healthy"},
            }

    def test_images_build_from_the_repo_dockerfile_and_run_console_scripts(
        self, compose: dict[str, Any]
    ) -> None:
        for name in ("sandbox", "ingest", "uploader", "status-poller"):
            svc = compose["services"][name]
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
            assert svc["command"][0] in console_scripts()

    def test_env_vars_are_ones_the_service_reads(self, compose: dict[str, Any]) -> None:
        for name in ("sandbox", "ingest", "uploader", "status-poller"):
            svc = compose["services"][name]
            known = env_names(SETTINGS_BY_COMMAND[svc["command"][0]])
            assert set(svc["environment"]) - known == set(), name

    def test_the_sandbox_and_the_services_share_client_credentials(self, compose: dict[str, Any]) -> None:
        sandbox = compose["services"]["sandbox"]["environment"]
        ingest = compose["services"]["ingest"]["environment"]
        assert sandbox["SANDBOX_CLIENT_SECRET"] == ingest["TIKTOK_CLIENT_SECRET"]
        assert sandbox["SANDBOX_CLIENT_KEY"] == ingest["TIKTOK_CLIENT_KEY"]
        assert sandbox["SANDBOX_WEBHOOK_URL"] == "http://ingest:8000/v1/webhooks/tiktok"


class TestDockerfile:
    def test_copies_every_workspace_member(self) -> None:
        members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
        dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
        for member in members:
            assert f"COPY {member}/pyproject.toml {member}/" in dockerfile, member

    def test_installs_exactly_the_lock_without_dev_tools(self) -> None:
        dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
        assert dockerfile.count("uv sync --frozen --no-dev") == 2
        # --all-packages would install every workspace member, the dev-only reelay-testing among them.
        assert "--all-packages" not in dockerfile

    def test_ships_no_test_support(self) -> None:
        root = tomllib.loads((ROOT / "pyproject.toml").read_text())
        assert "reelay-testing" not in root["project"]["dependencies"]
        assert "reelay-testing" in root["dependency-groups"]["dev"]
        for member in root["tool"]["uv"]["workspace"]["members"]:
            project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
            if project["name"] != "reelay-testing":
                assert not any(d.startswith("reelay-testing") for d in project["dependencies"]), member


class TestMakeUpEnvironment:
    def test_env_vars_given_to_services_are_ones_they_read(self) -> None:
        cfg = c.StackConfig.from_env(Path("/repo"), {}, python="py")
        settings = {
            "ingest": (IngestSettings, "INGEST_"),
            "uploader": (UploaderSettings, "UPLOADER_"),
            "status-poller": (PollerSettings, "POLLER_"),
            "sandbox": (SandboxSettings, "SANDBOX_"),
        }
        others = {prefix for _, prefix in settings.values()}
        for spec in (s for stage in c.stack_stages(cfg) for s in stage if s.name in settings):
            cls, own = settings[spec.name]
            # The three services share one environment: each reads the shared names and its own prefix.
            relevant = {n for n in spec.env if n.startswith(own) or not n.startswith(tuple(others))}
            assert relevant - env_names(cls) - {c.STACK_ID_ENV} == set(), spec.name

    def test_each_service_reads_its_own_ports(self) -> None:
        assert {"INGEST_HOST", "INGEST_PORT"} <= env_names(IngestSettings)
        assert {"UPLOADER_OPS_HOST", "UPLOADER_OPS_PORT"} <= env_names(UploaderSettings)
        assert {"POLLER_OPS_HOST", "POLLER_OPS_PORT"} <= env_names(PollerSettings)
        assert {"SANDBOX_HOST", "SANDBOX_PORT", "SANDBOX_WEBHOOK_URL"} <= env_names(SandboxSettings)
