"""Specification of what an operator expects of deploy/k8s beyond references: disruption budgets,
zone spread, hardened pods, network policies, autoscaling bounded by the partitions, the topic Job,
and the compose file against the Compose specification. `make deploy-check` adds the renders by
kustomize, the Kubernetes and CRD schemas, checkov and hadolint (scripts/deploy_check.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from reelay_common.provision import TopicSettings, topic_configs
from reelay_common.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
SERVICES = ("reelay-ingest", "reelay-uploader", "reelay-status-poller")
WORKERS = ("reelay-uploader", "reelay-status-poller")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return [o for res in kust["resources"] for o in docs(K8S / "base" / res)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [match] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return match


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "Job")
    ]


class TestPods:
    def test_every_container_is_hardened(self, base: list[dict[str, Any]]) -> None:
        staging_sandbox = docs(K8S / "overlays" / "staging" / "sandbox.yaml")
        for name, spec in pod_specs(base + staging_sandbox):
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
            assert spec["automountServiceAccountToken"] is False, name
            for container in spec["containers"]:
                sc = container["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, name
                assert sc["readOnlyRootFilesystem"] is True, name
                assert sc["capabilities"]["drop"] == ["ALL"], name
                # A read-only root needs a writable /tmp (tempfile, spooling): an emptyDir.
                tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
                [volume] = [v for v in spec["volumes"] if v["name"] == tmp["name"]]
                assert "emptyDir" in volume, name
                assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name

    def test_services_spread_across_zones_and_have_a_disruption_budget(
        self, base: list[dict[str, Any]]
    ) -> None:
        for name in SERVICES:
            spec = one(base, "Deployment", name)["spec"]["template"]["spec"]
            keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
            assert "topology.kubernetes.io/zone" in keys, name
            pdb = one(base, "PodDisruptionBudget", name)
            assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}

    def test_autoscaled_deployments_leave_the_replica_count_to_the_autoscaler(
        self, base: list[dict[str, Any]]
    ) -> None:
        for name in SERVICES:
            assert "replicas" not in one(base, "Deployment", name)["spec"], name
        hpa = one(base, "HorizontalPodAutoscaler", "reelay-ingest")
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    def test_the_uploader_outlives_its_shutdown_grace(self, base: list[dict[str, Any]]) -> None:
        dep = one(base, "Deployment", "reelay-uploader")["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in dep["containers"][0]["env"]}
        assert dep["terminationGracePeriodSeconds"] > float(env["UPLOADER_SHUTDOWN_GRACE_SECONDS"])


class TestNetwork:
    def test_every_reelay_pod_is_denied_by_default(self, base: list[dict[str, Any]]) -> None:
        deny = one(base, "NetworkPolicy", "reelay-default-deny")
        assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert "ingress" not in deny["spec"]
        assert "egress" not in deny["spec"]
        selector = deny["spec"]["podSelector"]["matchLabels"]
        for name, _ in pod_specs(base):
            labels = next(
                o["spec"]["template"]["metadata"]["labels"] for o in base if o["metadata"]["name"] == name
            )
            assert selector.items() <= labels.items(), name

    def test_ingest_only_from_the_ingress_controller_and_monitoring(self, base: list[dict[str, Any]]) -> None:
        rule = one(base, "NetworkPolicy", "reelay-ingest-ingress")["spec"]["ingress"]
        sources = {
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule[0]["from"]
        }
        assert sources == {"ingress-nginx", "monitoring"}
        assert rule[0]["ports"] == [{"protocol": "TCP", "port": 8000}]

    def test_ops_ports_only_from_monitoring(self, base: list[dict[str, Any]]) -> None:
        [rule] = one(base, "NetworkPolicy", "reelay-ops-from-monitoring")["spec"]["ingress"]
        [source] = rule["from"]
        assert source == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        assert {p["port"] for p in rule["ports"]} == {9101, 9102}

    def test_egress_is_dns_kafka_mongo_and_public_https(self, base: list[dict[str, Any]]) -> None:
        egress = one(base, "NetworkPolicy", "reelay-egress")["spec"]["egress"]
        ports = sorted((p["protocol"], p["port"]) for rule in egress for p in rule["ports"])
        assert ports == [("TCP", 53), ("TCP", 443), ("TCP", 9092), ("TCP", 27017), ("UDP", 53)]
        [https] = [r for r in egress if r["ports"] == [{"protocol": "TCP", "port": 443}]]
        assert "10.0.0.0/8" in https["to"][0]["ipBlock"]["except"]


def partitions_of(overlay: str) -> int:
    config = one(docs(K8S / "overlays" / overlay / "config.yaml"), "ConfigMap", "reelay-config")
    return int(config["data"]["REELAY_TOPIC_PARTITIONS"])


class TestAutoscaling:
    @pytest.mark.parametrize("overlay", ["staging", "production"])
    def test_workers_scale_on_lag_never_beyond_the_partitions(self, overlay: str) -> None:
        kust = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        assert "../../components/keda" in kust["components"]
        scaled = docs(K8S / "components" / "keda" / "scaledobjects.yaml")
        bound = max(o["spec"]["maxReplicaCount"] for o in scaled)
        for patch in kust.get("patches", []):
            if patch.get("target", {}).get("kind") == "ScaledObject":
                for op in yaml.safe_load(patch["patch"]):
                    if op["path"] == "/spec/maxReplicaCount":
                        bound = op["value"]
        assert bound <= partitions_of(overlay)
        for obj in scaled:
            [trigger] = obj["spec"]["triggers"]
            assert trigger["type"] == "kafka"
            assert trigger["metadata"]["allowIdleConsumers"] == "false"
            assert obj["spec"]["scaleTargetRef"]["name"] in WORKERS

    def test_the_hpa_alternative_scales_the_same_workers_on_exported_lag(self) -> None:
        hpas = docs(K8S / "components" / "hpa-workers" / "hpa.yaml")
        assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == set(WORKERS)
        for hpa in hpas:
            assert hpa["spec"]["maxReplicas"] <= partitions_of("production")
            assert (
                hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "reelay_kafka_consumer_lag_records"
            )


class TestTopicJob:
    def test_reads_the_same_names_and_defaults_as_the_services(self) -> None:
        common = CommonSettings.model_fields
        for name, field in TopicSettings.model_fields.items():
            assert field.validation_alias == common[name].validation_alias, name
            assert field.default == common[name].default, name

    def test_needs_no_secret(self, base: list[dict[str, Any]]) -> None:
        job = one(base, "Job", "reelay-create-topics")["spec"]["template"]["spec"]
        [container] = job["containers"]
        assert container["command"] == ["reelay-create-topics"]
        assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in container["env"])

    def test_replicated_topics_want_two_in_sync_replicas(self) -> None:
        assert topic_configs(3) == {"min.insync.replicas": "2"}
        assert topic_configs(1) == {}


class TestCompose:
    def test_validates_against_the_compose_specification(self) -> None:
        schema = json.loads((ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
        jsonschema.Draft7Validator(schema).validate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))

    def test_the_schema_refuses_what_compose_would(self) -> None:
        schema = json.loads((ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(schema).validate({"services": {"x": {"restart_policy": "always"}}})
