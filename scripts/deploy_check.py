"""`make deploy-check`: what can be shown of deploy/ without a cluster or Docker.

- both overlays render with kustomize (the binary `make k8s` builds; its path is argv[1]);
- every rendered object validates strictly against the Kubernetes schemas (kubernetes-validate,
  which ships them), and the custom resources (KEDA's ScaledObject, the Prometheus operator's
  ServiceMonitor) against the openAPIV3Schema of their CRDs vendored in deploy/schemas, made strict
  the way the API server prunes (no property that the schema does not name);
- checkov passes on the renders, the hpa-workers component and the Dockerfile (.checkov.yaml lists
  each accepted finding with its reason); hadolint passes on the Dockerfile;
- docker-compose.yml validates against the Compose specification's JSON Schema.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = ROOT / "deploy" / "schemas"
OVERLAYS = ("staging", "production")
KUBERNETES_VERSION = "1.31.0"
CHECKOV = "checkov==3.3.30"  # run through `uv tool run`: its pins (packaging<24) clash with the dev group
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
}
BIN = Path(sys.executable).parent


def run(*args: str | Path) -> None:
    """Run a checker; its output is the report, its exit status the verdict."""
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True)  # noqa: S603  # fixed tools of this repo's dev environment


def strict(schema: Any) -> Any:
    """The CRD schema with additionalProperties: false wherever it names properties and does not
    keep unknown fields, so an unknown or misspelt field fails as the API server would drop it."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of `kind` at `api_version`, from the vendored CRD."""
    crd = yaml.safe_load((SCHEMAS / CRDS[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    [entry] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = strict(entry["schema"]["openAPIV3Schema"])
    return schema


def check_custom_resources(objects: list[dict[str, Any]], where: str) -> int:
    """Validate each custom resource against its CRD; how many were checked."""
    checked = 0
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key not in CRDS:
            continue
        errors = sorted(jsonschema.Draft7Validator(crd_schema(*key)).iter_errors(obj), key=str)
        for error in errors:
            print(f"{where}: {obj['kind']} {obj['metadata']['name']}: {error.json_path}: {error.message}")
        if errors:
            raise SystemExit(1)
        checked += 1
    return checked


def main() -> None:
    """Render, validate and lint; exit non-zero at the first failure."""
    kustomize = Path(sys.argv[1])
    uv = ROOT / ".cache" / "tools" / "bin" / "uv"
    with tempfile.TemporaryDirectory(prefix="reelay-deploy-check-") as tmp:
        out = Path(tmp)
        for overlay in OVERLAYS:
            rendered = out / f"{overlay}.yaml"
            with rendered.open("w") as fh:
                build = [str(kustomize), "build", str(K8S / "overlays" / overlay)]
                subprocess.run(build, check=True, stdout=fh)  # noqa: S603  # the kustomize `make k8s` built
            objects = [o for o in yaml.safe_load_all(rendered.read_text()) if o]
            print(f"deploy/k8s/overlays/{overlay}: {len(objects)} objects rendered")
            core = out / f"{overlay}-core.yaml"
            core.write_text(
                yaml.safe_dump_all([o for o in objects if (o["apiVersion"], o["kind"]) not in CRDS])
            )
            run(BIN / "kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES_VERSION, core)
            print(f"  {check_custom_resources(objects, overlay)} custom resources valid against their CRDs")
        alternative = out / "hpa-workers.yaml"
        alternative.write_text((K8S / "components" / "hpa-workers" / "hpa.yaml").read_text())
        run(BIN / "kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES_VERSION, alternative)
        checkov = (uv, "tool", "run", "--from", CHECKOV, "checkov", "--config-file", ROOT / ".checkov.yaml")
        run(*checkov, "--directory", out)
        run(*checkov, "--file", ROOT / "deploy" / "Dockerfile")
    run(BIN / "hadolint", ROOT / "deploy" / "Dockerfile")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose)
    print("docker-compose.yml: valid against the Compose specification")


if __name__ == "__main__":
    main()
