"""The published contract of Reelay's Kafka messages: one JSON Schema per message and an AsyncAPI 3.0
document of the topics, generated from the pydantic models in `reelay_common.messages`.

`render_all()` returns file name -> exact file text; `scripts/export_schemas.py` writes them to
`schemas/` and tests/unit/test_schemas.py fails when the committed files differ from it.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from reelay_common.domain import messages as m

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
KAFKA_BINDING_VERSION = "0.5.0"

ACCOUNT_KEY = {
    "type": "string",
    "description": "account_id (UTF-8): one partition serialises one TikTok account.",
}
DLQ_KEY = {"type": "string", "description": "The key of the original record, unchanged."}

# What each message is keyed by, on the wire.
MESSAGE_KEYS: dict[str, dict[str, str]] = {
    "UploadRequested": ACCOUNT_KEY,
    "VideoUploaded": ACCOUNT_KEY,
    "TikTokWebhookReceived": {
        "type": "string",
        "description": "account_id of the upload the event belongs to; when Reelay does not know "
        "the upload, the TikTok user's open_id (else the publish_id).",
    },
    "PublishStatusChanged": ACCOUNT_KEY,
    "DeadLetter": DLQ_KEY,
}


def _summary(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def message_json_schema(name: str, model: type[BaseModel]) -> dict[str, Any]:
    """The standalone JSON Schema of one message, as upstream producers validate against it."""
    schema = model.model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"{name}.schema.json", **schema}


def _channel(address: str, title: str, description: str, message_names: list[str]) -> dict[str, Any]:
    return {
        "address": address,
        "title": title,
        "description": description,
        "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in message_names},
        "bindings": {"kafka": {"topic": address, "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _operation(action: str, channel: str, summary: str, message_names: list[str]) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{n}"} for n in message_names],
    }


def asyncapi_document(all_messages: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """An AsyncAPI 3.0 description of Reelay's topics, keys and messages (Reelay's point of view)."""
    _, top = models_json_schema(
        [(model, "validation") for model in all_messages.values()],
        ref_template="#/components/schemas/{model}",
    )
    schemas = dict(sorted(top.get("$defs", {}).items()))
    requested, events, status = m.TOPIC_UPLOAD_REQUESTED, m.TOPIC_PUBLISH_EVENTS, m.TOPIC_PUBLISH_STATUS
    event_names = ["VideoUploaded", "TikTokWebhookReceived"]
    channels = {
        "uploadRequested": _channel(
            requested,
            "Upload requests",
            "One record per video to publish. Produced by the ingest API or directly by upstream "
            "services; consumed by the uploader. Records with the same request_id are one upload.",
            ["UploadRequested"],
        ),
        "publishEvents": _channel(
            events,
            "Publish events",
            "What happened to a publish on TikTok's side: the uploader's VideoUploaded and the "
            "verified TikTok webhooks from ingest. Consumed by the status-poller.",
            event_names,
        ),
        "publishStatus": _channel(
            status,
            "Upload state changes (outbound)",
            "Every state change of an upload, for upstream services to follow.",
            ["PublishStatusChanged"],
        ),
        "uploadRequestedDlq": _channel(
            m.dlq_topic(requested),
            "Dead letters of upload requests",
            "Upload requests that could not be processed, with the reason.",
            ["DeadLetter"],
        ),
        "publishEventsDlq": _channel(
            m.dlq_topic(events),
            "Dead letters of publish events",
            "Publish events that could not be processed, with the reason.",
            ["DeadLetter"],
        ),
    }
    operations = {
        "receiveUploadRequested": _operation(
            "receive", "uploadRequested", "The uploader publishes each requested video.", ["UploadRequested"]
        ),
        "sendUploadRequested": _operation(
            "send", "uploadRequested", "The ingest API enqueues an accepted upload.", ["UploadRequested"]
        ),
        "sendPublishEvents": _operation(
            "send",
            "publishEvents",
            "The uploader and the webhook receiver report publish events.",
            event_names,
        ),
        "receivePublishEvents": _operation(
            "receive", "publishEvents", "The status-poller tracks each publish to its outcome.", event_names
        ),
        "sendPublishStatus": _operation(
            "send",
            "publishStatus",
            "Every service announces the state changes it records.",
            ["PublishStatusChanged"],
        ),
        "sendUploadRequestedDeadLetters": _operation(
            "send",
            "uploadRequestedDlq",
            "The uploader dead-letters requests it cannot process.",
            ["DeadLetter"],
        ),
        "sendPublishEventsDeadLetters": _operation(
            "send",
            "publishEventsDlq",
            "The status-poller dead-letters events it cannot process.",
            ["DeadLetter"],
        ),
    }
    messages = {
        name: {
            "name": name,
            "title": name,
            "summary": _summary(model),
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
            "bindings": {"kafka": {"key": dict(MESSAGE_KEYS[name]), "bindingVersion": KAFKA_BINDING_VERSION}},
        }
        for name, model in all_messages.items()
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Reelay",
            "version": "1.0.0",
            "description": "Reelay publishes videos to TikTok through the official Content Posting API. "
            "Messages are JSON; readers ignore fields they do not know, and messages only ever gain "
            "optional fields. Standalone JSON Schemas of each message sit beside this file.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The broker `make up` starts (KRaft, one node).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render_all(all_messages: dict[str, type[BaseModel]] | None = None) -> dict[str, str]:
    """File name -> file text for everything in schemas/."""
    msgs = all_messages if all_messages is not None else m.ALL_MESSAGES
    files = {
        f"{name}.schema.json": json.dumps(message_json_schema(name, model), indent=2, ensure_ascii=False)
        + "\n"
        for name, model in msgs.items()
    }
    header = "# Generated by `make schemas` from reelay_common.messages. Do not edit.\n"
    files["asyncapi.yaml"] = header + yaml.safe_dump(
        asyncapi_document(msgs), sort_keys=False, allow_unicode=True, width=100
    )
    return files
