"""Reading a request's JSON body: bounded in size and time, parsed strictly, every refusal told.

The fast path parses once (pydantic's own JSON parser, straight into the model). Only a body
that parser refuses is looked at again, with Python's json module, to say which field is wrong:
a NUL or an unpaired surrogate, a number of thousands of digits, nesting hundreds deep.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.api.errors import BodyTooSlow, InvalidRequest
from service.common.validation import describe

M = TypeVar("M", bound=BaseModel)

# Digits a JSON number may have before it is told "too large" rather than parsed: far beyond
# any field's range, far below what would cost time to convert.
MAX_DIGITS = 30


async def read_json(request: web.Request, model: type[M], within: float) -> M:
    """The body as `model`; InvalidRequest (400), 413 past the size limit, BodyTooSlow (408)
    if it does not arrive within `within` seconds."""
    _check_headers(request)
    raw = await _read(request, within)
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise InvalidRequest(explain(error, raw)) from None


def _check_headers(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise InvalidRequest("Content-Type must be application/json")
    if request.charset is not None and request.charset.lower() not in ("utf-8", "utf8"):
        raise InvalidRequest("Content-Type charset must be utf-8: JSON is UTF-8")
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        # Not inflated by the server (auto_decompress off): a small zip bomb stays small.
        raise InvalidRequest("Content-Encoding is not supported: send the body uncompressed")


async def _read(request: web.Request, within: float) -> bytes:
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        # Announced too large: refused before a byte of it is read.
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    if request.content_length is not None and (
        request.content.total_bytes >= request.content_length
    ):
        # Arrived with the headers, as a small body nearly always does: nothing to wait for,
        # and no timer to set up (its cost shows per request).
        return await request.read()
    try:
        async with asyncio.timeout(within):
            return await request.read()  # raises 413 past client_max_size
    except TimeoutError:
        raise BodyTooSlow(within) from None


def explain(error: ValidationError, raw: bytes) -> str:
    """What is wrong with a body the model refused, in words a client can act on."""
    first = error.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return _explain_invalid_json(raw, first["msg"].removeprefix("Invalid JSON: "))
    if first["type"] == "model_type" and not first["loc"]:
        return "body must be a JSON object"
    return describe(error)


def _explain_invalid_json(raw: bytes, parser_says: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"body is not valid JSON: not UTF-8 (byte {error.start})"
    try:
        body = json.loads(text, parse_int=_bounded_int)
        problem = _first_problem(body, ())
    except RecursionError:
        return "body is not valid JSON: nested too deeply"
    except ValueError as error:  # json.JSONDecodeError: says where, without echoing the input
        return f"body is not valid JSON: {error}"
    if problem is not None:
        return problem
    if "recursion limit" in parser_says:
        return "body is not valid JSON: nested too deeply"
    return f"body is not valid JSON: {parser_says}"


class _TooManyDigits:
    """A JSON number too long to be any field's value."""


def _bounded_int(digits: str) -> int | _TooManyDigits:
    return _TooManyDigits() if len(digits) > MAX_DIGITS else int(digits)


def _first_problem(value: Any, path: tuple[str, ...]) -> str | None:
    """`field: what is wrong` for the first value a strict parser refuses, else None."""
    where = ".".join(path) or "body"
    if isinstance(value, _TooManyDigits):
        return f"{where}: number too large"
    if isinstance(value, str):
        return _string_problem(value, where)
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if problem := _string_problem(key, f"{where} (a key)"):
                return problem
            items.append((key, item))
    elif isinstance(value, list):
        items = [(str(index), item) for index, item in enumerate(value)]
    for name, item in items:
        if problem := _first_problem(item, (*path, name)):
            return problem
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _string_problem(text: str, where: str) -> str | None:
    if _SURROGATE.search(text):
        return f"{where}: contains an unpaired surrogate (\\ud800-\\udfff), which is not text"
    return None
