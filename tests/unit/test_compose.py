"""compose.yaml exposes nothing it should not and holds no credential: PostgreSQL and RabbitMQ
stay on the compose network, every secret comes from .env (with no default to fall back on), and
.env.example names every variable compose requires. (No Docker here: the file is read as YAML.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
# ${NAME}, ${NAME:-default}, ${NAME:?message}
VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
SECRET_NAME = re.compile(r"PASS|TOKEN|SECRET|KEY", re.IGNORECASE)


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [value] if isinstance(value, str) else []


def required(text: str) -> bool:
    """`text` is exactly one variable that compose requires (${NAME:?...}), with no default."""
    match = VARIABLE.fullmatch(text)
    return bool(match and match[2] == "?")


def environment(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service].get("environment", {}).items()}


@pytest.mark.parametrize("service", ["postgres", "rabbitmq"])
def test_databases_and_brokers_are_not_published(service: str) -> None:
    definition = SERVICES[service]
    for port in definition.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{service} publishes {port}"
    assert "network_mode" not in definition
    assert "management" not in definition["image"]  # no management UI on 15672


def test_only_the_api_is_published() -> None:
    published = {name for name, definition in SERVICES.items() if definition.get("ports")}
    assert published == {"api"}


def test_every_credential_comes_from_env_with_no_default() -> None:
    for name in SERVICES:
        for key, value in environment(name).items():
            if SECRET_NAME.search(key) or key == "POSTGRES_USER":
                assert required(value), f"{name}.{key} = {value!r}"
            if "://" in value:
                url = urlsplit(VARIABLE.sub("x", value))
                if url.username is not None or url.password is not None:
                    # user:password@ is two variables compose requires, and nothing else.
                    userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
                    parts = list(VARIABLE.finditer(userinfo))
                    assert VARIABLE.sub("V", userinfo) == "V:V", f"{name}.{key} = {value!r}"
                    assert all(part[2] == "?" for part in parts), f"{name}.{key} = {value!r}"


def test_no_well_known_credential_is_left_anywhere() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for known in ("guest", "postgres:postgres", "POSTGRES_PASSWORD: postgres", "changeme"):
        assert known not in text
    for variable in VARIABLE.finditer(text):
        if SECRET_NAME.search(variable[1]):
            assert variable[2] == "?", variable[0]


def test_the_api_requires_a_shows_token() -> None:
    assert required(environment("api")["SHOWS_API_TOKEN"])


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name.strip(): value.strip() for name, value in pairs}


def test_env_example_names_every_required_variable_and_no_secret() -> None:
    needed = {m[1] for s in strings(COMPOSE) for m in VARIABLE.finditer(s) if m[2] == "?"}
    example = env_example()
    assert needed <= set(example), needed - set(example)
    assert {"POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "SHOWS_API_TOKEN"} <= needed
    for name, value in example.items():
        if SECRET_NAME.search(name):
            assert value == "", f"{name} has a value in .env.example"


@pytest.mark.parametrize("ignore_file", [".gitignore", ".dockerignore"])
def test_env_is_never_committed_nor_built_into_the_image(ignore_file: str) -> None:
    assert ".env" in (ROOT / ignore_file).read_text().splitlines()
