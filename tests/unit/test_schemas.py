"""Specification of the published message contract in schemas/: it is what the code generates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from reelay_common.domain import messages as m

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
sys.path.insert(0, str(ROOT / "scripts"))  # the generator lives with the dev tooling, not in a package

from reelay_dev.schemas import asyncapi_document, render_all  # noqa: E402  # needs the path above


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


class TestCommittedSchemas:
    def test_match_what_the_code_generates(self) -> None:
        stale = [
            name
            for name, text in render_all().items()
            if not (SCHEMAS / name).exists() or (SCHEMAS / name).read_text() != text
        ]
        assert stale == [], f"schemas/ is out of date for {stale}: run `make schemas` and commit"

    def test_hold_nothing_that_is_not_generated(self) -> None:
        extra = {p.name for p in SCHEMAS.iterdir() if p.is_file()} - set(render_all()) - {"README.md"}
        assert extra == set()

    def test_every_message_has_a_json_schema(self) -> None:
        for name, model in m.ALL_MESSAGES.items():
            schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
            assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
            assert schema["title"] == model.__name__
            assert set(schema["required"]) <= set(schema["properties"])


class TestAsyncApiDocument:
    def test_describes_every_topic_with_its_messages(self) -> None:
        doc = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
        assert doc["asyncapi"] == "3.0.0"
        addresses = {ch["address"]: set(ch["messages"]) for ch in doc["channels"].values()}
        assert addresses == {
            m.TOPIC_UPLOAD_REQUESTED: {"UploadRequested"},
            m.TOPIC_PUBLISH_EVENTS: {"VideoUploaded", "TikTokWebhookReceived"},
            m.TOPIC_PUBLISH_STATUS: {"PublishStatusChanged"},
            m.dlq_topic(m.TOPIC_UPLOAD_REQUESTED): {"DeadLetter"},
            m.dlq_topic(m.TOPIC_PUBLISH_EVENTS): {"DeadLetter"},
        }

    def test_states_the_key_of_every_message(self) -> None:
        doc = asyncapi_document(m.ALL_MESSAGES)
        for name in ("UploadRequested", "VideoUploaded", "PublishStatusChanged"):
            key = doc["components"]["messages"][name]["bindings"]["kafka"]["key"]
            assert key["type"] == "string"
            assert key["description"].startswith("account_id")

    def test_every_reference_resolves(self) -> None:
        doc = asyncapi_document(m.ALL_MESSAGES)
        found = refs(doc)
        assert found, "the document must reference its messages and schemas"
        for ref in found:
            assert resolve(doc, ref) is not None, ref

    def test_payloads_are_the_message_schemas(self) -> None:
        doc = asyncapi_document(m.ALL_MESSAGES)
        schemas = doc["components"]["schemas"]
        for name, model in m.ALL_MESSAGES.items():
            payload = resolve(doc, doc["components"]["messages"][name]["payload"]["$ref"])
            assert payload is schemas[model.__name__]
            assert set(payload["properties"]) == set(model.model_fields)
