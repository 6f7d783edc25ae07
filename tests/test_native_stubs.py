"""The checked-in `_native.pyi` describes exactly what the compiled module exports (names and, for
functions, keyword-only parameters), so type checkers and readers see the real API."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import vlrank
from vlrank import _native

STUB = Path(vlrank.__file__).parent / "_native.pyi"


def _stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text())


def test_every_export_has_a_stub_and_back() -> None:
    tree = _stub_tree()
    stubbed = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stubbed.add(node.target.id)
    exported = {name for name in dir(_native) if not name.startswith("_")} | {"__version__"}
    assert exported - stubbed == set(), "exported by the extension but missing from _native.pyi"
    assert stubbed - exported == set(), "described in _native.pyi but not exported by the extension"


def test_function_parameters_match_the_stub() -> None:
    for node in _stub_tree().body:
        if not isinstance(node, ast.FunctionDef):
            continue
        native = getattr(_native, node.name)
        try:
            signature = inspect.signature(native)
        except (TypeError, ValueError):  # pragma: no cover - PyO3 functions carry a text signature
            continue
        stub_names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
        assert list(signature.parameters) == stub_names, node.name
        stub_kwonly = {a.arg for a in node.args.kwonlyargs}
        native_kwonly = {n for n, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY}
        assert native_kwonly == stub_kwonly, node.name
