"""The OpenAPI document: valid OpenAPI 3.1, generated from the routes the app serves and the
models it parses with, every answer documented; the /docs page made from it, offline."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from service.api import create_app
from service.api.docs_page import render_docs_page
from service.api.openapi import openapi_document
from service.api.routes import ROUTES
from service.api.schemas import BookTicketsBody, NewShowBody
from service.api.state import OPENAPI
from service.settings import Settings

TOKEN = "0123456789abcdef-token"


def document(token: str = "") -> dict[str, Any]:
    return create_app(Settings.from_env({}).replaced(shows_api_token=token))[OPENAPI]


@pytest.mark.parametrize("token", ["", TOKEN])
def test_the_document_is_valid_openapi_3_1(token: str) -> None:
    validate(document(token))
    assert document(token)["openapi"] == "3.1.0"


def test_every_route_the_app_serves_is_documented_and_nothing_else() -> None:
    app = create_app(Settings.from_env({}))
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (method, path) for path, operations in document()["paths"].items() for method in operations
    }
    assert served == documented
    assert ("post", "/book-tickets") in documented


def test_request_bodies_are_the_models_the_routes_parse_with() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    for path, model in (("/shows", NewShowBody), ("/book-tickets", BookTicketsBody)):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model.__name__}"}
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        assert schemas[model.__name__] == generated


def responses(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return dict(doc["paths"][path][method]["responses"])


def test_every_error_status_is_documented_with_the_error_body() -> None:
    doc = document(TOKEN)
    error = {"$ref": "#/components/schemas/ErrorBody"}
    expected = {
        ("post", "/shows"): {"200", "201", "400", "401", "408", "409", "413", "503"},
        ("post", "/book-tickets"): {"201", "400", "404", "408", "413", "422", "503"},
        ("get", "/shows/{show_id}"): {"200", "404", "503"},
        ("get", "/bookings/{booking_id}"): {"200", "404", "503"},
        ("delete", "/bookings/{booking_id}"): {"200", "404", "503"},
        ("get", "/ready"): {"200", "503"},
    }
    for (method, path), statuses in expected.items():
        answers = responses(doc, method, path)
        assert set(answers) == statuses, (method, path)
        for status, answer in answers.items():
            if status >= "400":
                assert answer["content"]["application/json"]["schema"] == error


def test_busy_answers_carry_retry_after_and_401_carries_www_authenticate() -> None:
    doc = document(TOKEN)
    busy = responses(doc, "post", "/book-tickets")["503"]
    assert busy["headers"]["Retry-After"]["required"] is True
    assert "BOOKING_MAX_QUEUED" in busy["description"]
    unauthorized = responses(doc, "post", "/shows")["401"]
    assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True


def test_idempotency_key_and_its_replay_are_documented() -> None:
    booking = document()["paths"]["/book-tickets"]["post"]
    (key,) = [p for p in booking["parameters"] if p.get("name") == "Idempotency-Key"]
    assert (key["in"], key["required"], key["schema"]["maxLength"]) == ("header", False, 255)
    for status in ("201", "400", "404"):  # the answers a key can replay
        assert "Idempotent-Replayed" in booking["responses"][status]["headers"], status


def test_the_token_is_declared_only_when_the_server_needs_one() -> None:
    assert document(TOKEN)["paths"]["/shows"]["post"]["security"] == [{"bearerToken": []}]
    assert "security" not in document()["paths"]["/shows"]["post"]
    assert "401" not in responses(document(), "post", "/shows")


def test_links_lead_from_a_new_show_to_booking_it() -> None:
    doc = document()
    links = responses(doc, "post", "/shows")["201"]["links"]
    assert links["BookTickets"] == {
        "operationId": "post_book_tickets",
        "requestBody": {"show_id": "$response.body#/show_id"},
    }
    operation_ids = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    all_links = [
        link
        for ops in doc["paths"].values()
        for op in ops.values()
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert all_links and all(link["operationId"] in operation_ids for link in all_links)


def test_the_document_is_the_same_for_the_same_routes() -> None:
    assert openapi_document(ROUTES, token_required=False) == document()


def test_the_docs_page_shows_every_route_and_loads_nothing_from_elsewhere() -> None:
    page = render_docs_page(document(TOKEN))
    for path, operations in document(TOKEN)["paths"].items():
        for method in operations:
            assert f"<span class=method>{method.upper()}</span> <code>{path}</code>" in page
    assert "Authorization: Bearer &lt;token&gt;" in page
    assert "<script" not in page
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert len(page) < 64 * 1024
