"""SHOWS_API_TOKEN: when set, the routes that create things need `Authorization: Bearer <token>`."""

from __future__ import annotations

import hmac

from aiohttp import web

from service.api.errors import Handler, Unauthorized


def requiring_token(token: str, handler: Handler) -> Handler:
    """`handler`, answered 401 unless the request carries `token` as its bearer token."""
    expected = token.encode()

    async def check_then_handle(request: web.Request) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Bytes, compared in constant time: a header may hold any character (compare_digest
        # refuses non-ASCII str), and the time taken must not tell how much of it matched.
        matches = hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected)
        if scheme.lower() != "bearer" or not matches:
            raise Unauthorized()
        return await handler(request)

    return check_then_handle
