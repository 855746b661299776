"""GET /docs: the OpenAPI document as one small HTML page, rendered here from the document.

No scripts, no stylesheet or font from elsewhere: it works on a machine with no internet access.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
.method { font: bold 13px monospace; padding: 2px 6px; border-radius: 3px; background: #dde; }
code, pre { font: 13px monospace; background: #f5f5f5; }
pre { padding: .6rem; overflow-x: auto; }
table { border-collapse: collapse; } td, th { text-align: left; padding: 2px 10px 2px 0; vertical-align: top; }
"""  # noqa: E501


def render_docs_page(document: dict[str, Any]) -> str:
    info = document["info"]
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>{escape(info['title'])} API</title><style>{STYLE}</style>",
        f"<h1>{escape(info['title'])} API</h1><p>{escape(info['description'])}</p>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>',
    ]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            parts.append(_operation(method, path, _resolved(operation, document)))
    parts.append("<h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        parts.append(f'<h3 id="{escape(name)}">{escape(name)}</h3>{_schema(schema)}')
    return "\n".join(parts)


def _resolved(value: Any, document: dict[str, Any]) -> Any:
    """`value` with references to components/parameters and components/headers replaced by
    what they refer to (schema references stay: they become links)."""
    if isinstance(value, list):
        return [_resolved(item, document) for item in value]
    if not isinstance(value, dict):
        return value
    ref = value.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#/components/schemas/"):
        target: Any = document
        for step in ref.split("/")[1:]:
            target = target[step]
        return _resolved(target, document)
    return {key: _resolved(item, document) for key, item in value.items()}


def _operation(method: str, path: str, operation: dict[str, Any]) -> str:
    parts = [
        f"<h2><span class=method>{method.upper()}</span> <code>{escape(path)}</code></h2>",
        f"<p>{escape(operation['summary'])}</p>",
    ]
    if operation.get("security"):
        parts.append("<p>Needs <code>Authorization: Bearer &lt;token&gt;</code>.</p>")
    rows = [
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}"
        f"{' (required)' if p['required'] else ''}</td><td>{escape(p['description'])}</td></tr>"
        for p in operation["parameters"]
    ]
    parts.append(f"<h4>Parameters</h4><table>{''.join(rows)}</table>")
    if "requestBody" in operation:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        parts.append(f"<h4>Body (application/json)</h4>{_schema(schema)}")
    parts.append("<h4>Answers</h4><table>")
    for status, response in operation["responses"].items():
        (media_type, content), *_ = response["content"].items()
        headers = [name for name, h in response["headers"].items() if h["required"]]
        also = f" (header {', '.join(headers)})" if headers else ""
        parts.append(
            f"<tr><td><b>{escape(status)}</b></td><td>{escape(response['description'])}{also}"
            f"</td><td>{escape(media_type)} {_schema(content['schema'], inline=True)}</td></tr>"
        )
    parts.append("</table>")
    return "\n".join(parts)


def _schema(schema: dict[str, Any], inline: bool = False) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = escape(ref.rsplit("/", 1)[-1])
        return f'<a href="#{name}">{name}</a>'
    text = escape(json.dumps(schema, indent=None if inline else 2, ensure_ascii=False))
    return f"<code>{text}</code>" if inline else f"<pre>{text}</pre>"
