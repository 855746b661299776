"""The code stays readable: no class over 150 lines, no function over 50, in the service, the
consumers and the benchmarks (the limits the README's "where things are" promises a newcomer)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_CLASS_LINES = 150
MAX_FUNCTION_LINES = 50
PACKAGES = ("service", "consumers", "bench")


def _definitions() -> list[tuple[str, ast.AST, int]]:
    found: list[tuple[str, ast.AST, int]] = []
    for path in sorted(path for package in PACKAGES for path in ROOT.glob(f"{package}/**/*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                found.append((f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node, lines))
    return found


def test_no_class_over_150_lines_and_no_function_over_50() -> None:
    too_long = [
        f"{where} ({lines} lines)"
        for where, node, lines in _definitions()
        if lines > (MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES)
    ]
    assert too_long == []
