"""JSON out, the fast way (orjson): response bodies, outbox payloads, log lines.

Reading stays with pydantic's parser (service/api/bodies.py), which is as fast and strict.
orjson writes compact JSON with UTF-8 as is, and refuses what JSON cannot hold (NaN, lone
surrogates) instead of writing it.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def to_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Bytes as orjson writes them: no str in between, to be encoded again on the way out.
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )
