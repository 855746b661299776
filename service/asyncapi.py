"""docs/asyncapi.yaml: the events as an AsyncAPI 3.0 document, generated from service/events.py.

    python -m service asyncapi > docs/asyncapi.yaml

A test fails when the committed file differs from what this generates, so the document cannot
drift from the models the consumers parse with.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from service.events import EVENT_BODIES

SCHEMAS = "#/components/schemas/{model}"


def asyncapi_document(exchange: str = "events") -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(model, "validation") for model in EVENT_BODIES.values()], ref_template=SCHEMAS
    )
    messages = {name: _message(name, model.__doc__) for name, model in EVENT_BODIES.items()}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tickets events",
            "version": "1.0.0",
            "description": (
                "Every accepted booking and every cancellation, published by the outbox relay "
                "after its transaction committed. Delivery is at least once; message_id is the "
                "deduplication key. A show's events leave in commit order."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"rabbitmq": {"host": "rabbitmq:5672", "protocol": "amqp"}},
        "channels": {"events": _channel(exchange, messages)},
        "operations": {
            f"publish{name}": {
                "action": "send",
                "channel": {"$ref": "#/channels/events"},
                "messages": [{"$ref": f"#/channels/events/messages/{name}"}],
            }
            for name in messages
        },
        "components": {"messages": messages, "schemas": schemas["$defs"]},
    }


def _channel(exchange: str, messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "address": exchange,
        "description": (
            f"The topic exchange EVENTS_EXCHANGE (default `{exchange}`); routing key = the "
            "event's name. Consumers bind a durable queue each."
        ),
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange, "type": "topic", "durable": True, "vhost": "/"},
            }
        },
    }


def _message(name: str, doc: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": (doc or "").strip(),
        "contentType": "application/json",
        "payload": {"$ref": SCHEMAS.format(model=f"{name}Body")},
        "headers": {
            "type": "object",
            "properties": {
                "traceparent": {
                    "type": "string",
                    "description": "W3C trace context of the request that caused the event",
                }
            },
        },
        "correlationId": {
            "description": "The Correlation-ID of the HTTP request (AMQP correlation_id)",
            "location": "$message.header#/correlation_id",
        },
        "bindings": {"amqp": {"messageType": name, "deliveryMode": 2}},
    }


def render() -> str:
    return yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)
