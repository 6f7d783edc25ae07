"""The import graph of python/vlrank: imports run one way, and the runtime never loads the exporter.

(a) the static graph (module-level and function-local imports, read with ast) has no cycle but the ones
    listed in KNOWN_CYCLES with their reason; (b) the runtime packages never import ``vlrank.export``
    (but for the one listed path that exports a raw checkpoint); (c) a fresh interpreter that imports
    vlrank, loads an exported model and reranks ends with neither ``vlrank.export`` nor ``onnx`` loaded.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from export_support import GOLDEN, VL_CKPT, exported

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "vlrank"
RUNTIME = ("vlrank.inputs", "vlrank.preprocess", "vlrank.engine", "vlrank.tasks", "vlrank.server")

# Cycles that may stay, each with its reason (a frozenset of the modules on the cycle): none today.
KNOWN_CYCLES: dict[frozenset[str], str] = {}

# Runtime modules that may import the exporter, with the reason.
EXPORTER_USERS = {
    "vlrank.engine.export_cache": "a raw checkpoint (not an exported directory) is exported once on first use; "
                                  "the import is function-local, after the exported-directory check",
}


def _modules() -> dict[str, Path]:
    """Every module of the package; a ``.pyi`` without its ``.py`` stands for an extension (``_native``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi") or (path.suffix == ".pyi" and path.with_suffix(".py").exists()):
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The vlrank modules ``name`` imports anywhere in its body (module level, functions, TYPE_CHECKING).
    ``from P import n`` names the module P.n when that is a module, else P; a package's parents are not
    counted (every module would otherwise reach vlrank/__init__.py)."""
    if path.suffix == ".pyi":
        return set()  # an extension's stub: its imports never run
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read_whole() -> None:
    graph = _graph()
    # The reader sees both kinds of import: a module-level one and a function-local one.
    assert "vlrank.engine.sessions" in graph["vlrank.engine.runner"]
    assert "vlrank.export" in graph["vlrank.engine.export_cache"]  # inside resolve_model_dir
    assert "vlrank.modeldir" in graph["vlrank.engine.vision"]
    assert len(graph) > 60


def test_the_import_graph_has_no_cycle_but_the_listed_ones() -> None:
    cycles = _cycles(_graph())
    unexpected = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert unexpected == [], f"import cycles: {unexpected}; break them (a leaf module for what both sides need)"


def test_the_runtime_packages_never_import_the_exporter() -> None:
    graph = _graph()
    offenders = sorted(
        (name, target) for name, targets in graph.items() for target in targets
        if name.startswith(RUNTIME) and name not in EXPORTER_USERS
        and (target == "vlrank.export" or target.startswith("vlrank.export."))
    )
    assert offenders == []
    # The model-directory format is a leaf: the vlrank modules it imports are the core and the errors only.
    assert graph["vlrank.modeldir"] <= {"vlrank._native", "vlrank.errors"}
    assert "vlrank.modeldir" in graph["vlrank.export.manifest"] and "vlrank.modeldir" in graph["vlrank.engine.manifest"]


_RUNTIME_SCRIPT = """
import json, sys
import vlrank
after_import = sorted(m for m in sys.modules if m == "onnx" or m.startswith(("onnx.", "vlrank.export")))
rr = vlrank.Reranker(sys.argv[1], providers="cpu")
image = open(sys.argv[2], "rb").read()
out = rr.rerank("a picture", ["Paris", {"content": [{"type": "image", "image": image}]}])
loaded = sorted(m for m in sys.modules if m == "onnx" or m.startswith(("onnx.", "vlrank.export")))
print(json.dumps({"after_import": after_import, "loaded": loaded, "n": len(out["results"]),
                  "tower": rr._tower is not None}))
"""


def test_running_an_exported_model_loads_neither_the_exporter_nor_onnx() -> None:
    model = exported(VL_CKPT, "rerank")
    env = dict(os.environ)  # the vlrank this interpreter imports (the installed wheel in CI)
    image = sorted((GOLDEN / "images").glob("*.png"))[0]
    proc = subprocess.run([sys.executable, "-c", _RUNTIME_SCRIPT, str(model), str(image)], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"after_import": [], "loaded": [], "n": 2, "tower": True}


def test_vlrank_export_is_callable_before_and_after_the_package_loads(tmp_path: Path) -> None:
    script = (
        "import sys, vlrank\n"
        "assert 'vlrank.export' not in sys.modules\n"
        "first = vlrank.export(sys.argv[1], sys.argv[2] + '/a', task='rerank', progress=False)\n"
        "from vlrank.export import export\n"
        "second = vlrank.export(sys.argv[1], sys.argv[2] + '/b', task='rerank', progress=False)\n"
        "assert vlrank.export.export is export and (first / 'vlrank.json').is_file()\n"
        "print(second.name)\n"
    )
    env = dict(os.environ)  # the vlrank this interpreter imports (the installed wheel in CI)
    proc = subprocess.run([sys.executable, "-c", script, str(VL_CKPT), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "b"
