"""The checked-in `_native.pyi` describes exactly what the compiled module exports (names and, for
functions, keyword-only parameters), so type checkers and readers see the real API."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import vlrank
from vlrank import _native
from vlrank.preprocess.prompts import Side

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


def test_parameter_defaults_match_the_stub() -> None:
    # A stub default `...` stands for a Rust constant (the compiled signature shows it as `...` too);
    # any other default is the same literal on both sides.
    for node in _stub_tree().body:
        if not isinstance(node, ast.FunctionDef):
            continue
        signature = inspect.signature(getattr(_native, node.name))
        args = node.args.posonlyargs + node.args.args
        stub_defaults = dict(zip([a.arg for a in args][len(args) - len(node.args.defaults):], node.args.defaults))
        stub_defaults.update({a.arg: d for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None})
        native_defaults = {n: p.default for n, p in signature.parameters.items() if p.default is not p.empty}
        assert set(stub_defaults) == set(native_defaults), node.name
        for name, default in stub_defaults.items():
            assert ast.literal_eval(default) == native_defaults[name], (node.name, name)


def test_template_token_constants_are_the_tokenizers_control_tokens(golden_dir: Path) -> None:
    tok = _native.Tokenizer.from_file(golden_dir / "models" / "tokenizer.json")
    ids = {name: tok.token_to_id(getattr(_native, name)) for name in
           ("ENDOFTEXT_TOKEN", "IM_START_TOKEN", "IM_END_TOKEN", "VISION_START_TOKEN", "VISION_END_TOKEN", "IMAGE_PAD_TOKEN")}
    assert ids == {"ENDOFTEXT_TOKEN": 151643, "IM_START_TOKEN": 151644, "IM_END_TOKEN": 151645,
                   "VISION_START_TOKEN": 151652, "VISION_END_TOKEN": 151653, "IMAGE_PAD_TOKEN": 151655}
    # An image of n tokens costs n pads plus its two markers in a prompt.
    assert _native.IMAGE_MARKER_TOKENS == 2
    (prompt,) = _native.build_vl_embed_ids(tok, inputs=[Side(images=[4])])
    assert prompt.count(ids["IMAGE_PAD_TOKEN"]) == 4
    start = prompt.index(ids["VISION_START_TOKEN"])
    assert prompt[start + 4 + _native.IMAGE_MARKER_TOKENS - 1] == ids["VISION_END_TOKEN"]
