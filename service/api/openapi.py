"""The OpenAPI 3.1 document, generated from the routes (routes.py) and their pydantic models.

Nothing here is written by hand per route: paths, parameters, request bodies, answers and their
schemas all come from ROUTES, so the document cannot drift from what the app serves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from service.api.routes import RETRY_AFTER, Answer, Header, Link, Route
from service.common.context import CORRELATION_HEADER

TITLE = "Tickets"
VERSION = "1"
DESCRIPTION = (
    "Book tickets for shows; never more than a show has. Every error body is "
    '`{"error": "<message>"}`. Bodies are JSON (UTF-8, at most 64 KiB, sent within '
    "HTTP_BODY_TIMEOUT seconds)."
)
CORRELATION_ID = Header(
    CORRELATION_HEADER,
    "kept if it is 1-128 of A-Z a-z 0-9 . _ : / @ + = -, else one is made; echoed, logged, "
    "carried on the booking's event",
    {"type": "string"},
)
# Answers every route of a kind can give, unless the route describes that status itself.
BODY_ANSWERS = {
    400: Answer("invalid body: the message names the field and what is wrong with it"),
    408: Answer("the body did not arrive within HTTP_BODY_TIMEOUT seconds; connection closed"),
    413: Answer("body over 64 KiB"),
}
DATABASE_DOWN = Answer("the database is unavailable; retry", headers=(RETRY_AFTER,))
NO_TOKEN = Answer(
    "no valid bearer token",
    headers=(Header("WWW-Authenticate", "Bearer", {"type": "string"}, True),),
)
BEARER = "bearerToken"


def openapi_document(routes: Sequence[Route], token_required: bool) -> dict[str, Any]:
    """The document for `routes`; routes that need a token declare it if `token_required`."""
    references, definitions = _schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = _operation(route, references, token_required)
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": definitions,
            # On every request and every answer: told once here, referred to everywhere.
            "parameters": {CORRELATION_HEADER: _header_parameter(CORRELATION_ID)},
            "headers": {CORRELATION_HEADER: _response_header(CORRELATION_ID)},
            "securitySchemes": {BEARER: {"type": "http", "scheme": "bearer"}},
        },
    }


Models = dict[tuple[type[Any], JsonSchemaMode], dict[str, Any]]


def _schemas(routes: Sequence[Route]) -> tuple[Models, dict[str, Any]]:
    """JSON schemas of every model the routes name: a reference per model, and the definitions
    they refer to (components/schemas)."""
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for route in routes:
        if route.body is not None:
            wanted[(route.body, "validation")] = None
        for answer in _answers(route, token_required=True).values():
            if isinstance(answer.body, type):
                wanted[(answer.body, "serialization")] = None
    references, top = models_json_schema(list(wanted), ref_template="#/components/schemas/{model}")
    return dict(references), dict(top.get("$defs", {}))


def _answers(route: Route, token_required: bool) -> dict[int, Answer]:
    answers: dict[int, Answer] = {}
    if route.body is not None:
        answers |= BODY_ANSWERS
    if route.needs_token and token_required:
        answers[401] = NO_TOKEN
    if route.uses_database:
        answers[503] = DATABASE_DOWN
    return answers | dict(route.answers)


def _operation(route: Route, references: Models, token_required: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id(route.method, route.path),
        "summary": route.summary,
        "parameters": [
            *_path_parameters(route.path),
            {"$ref": f"#/components/parameters/{CORRELATION_HEADER}"},
            *(_header_parameter(header) for header in route.headers),
        ],
        "responses": {
            str(status): _response(answer, references)
            for status, answer in sorted(_answers(route, token_required).items())
        },
    }
    if route.body is not None:
        schema = references[(route.body, "validation")]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    if route.needs_token and token_required:
        operation["security"] = [{BEARER: []}]
    return operation


def operation_id(method: str, path: str) -> str:
    """post_shows, get_shows_show_id, ...: made from the route, so a link can name its target."""
    return "_".join([method.lower(), *re.findall(r"[a-z0-9]+", path.lower())])


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": "a UUID; anything else is not found (404)",
            "schema": {"type": "string", "format": "uuid"},
        }
        for name in re.findall(r"{(\w+)}", path)
    ]


def _header_parameter(header: Header) -> dict[str, Any]:
    return {"name": header.name, "in": "header"} | _response_header(header)


def _response_header(header: Header) -> dict[str, Any]:
    return {
        "required": header.required,
        "description": header.description,
        "schema": dict(header.schema),
    }


def _response(answer: Answer, references: Models) -> dict[str, Any]:
    if isinstance(answer.body, type):
        schema = references[(answer.body, "serialization")]
    else:
        schema = dict(answer.body)
    headers = {CORRELATION_HEADER: {"$ref": f"#/components/headers/{CORRELATION_HEADER}"}}
    headers |= {header.name: _response_header(header) for header in answer.headers}
    response: dict[str, Any] = {
        "description": answer.description,
        "headers": headers,
        "content": {answer.media_type: {"schema": schema}},
    }
    if answer.links:
        response["links"] = {link.name: _link(link) for link in answer.links}
    return response


def _link(link: Link) -> dict[str, Any]:
    method, path = link.target.split(" ", 1)
    described: dict[str, Any] = {"operationId": operation_id(method, path)}
    if link.parameters:
        described["parameters"] = dict(link.parameters)
    if link.body is not None:
        described["requestBody"] = dict(link.body)
    return described
