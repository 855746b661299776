"""How a validation failure is told: the same words for an HTTP client and a dead letter."""

from __future__ import annotations

from pydantic import ValidationError

MAX_PROBLEMS = 3


def describe(error: ValidationError) -> str:
    """First few problems, each as `field: what is wrong`, without echoing the input back."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:MAX_PROBLEMS]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
