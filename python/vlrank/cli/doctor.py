"""``vlrank doctor``: what this environment runs on — versions, the ONNX Runtime distributions installed,
the execution providers they offer, the extras present — and what to fix.

Exit 0 when the install is sound, 1 when there is something to fix (the fix is printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from importlib import metadata

from vlrank.cli.common import add_command, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "doctor", help="check the install: versions, ONNX Runtime distributions and providers, extras",
        description="Print vlrank's and its runtime's versions, the installed ONNX Runtime distributions and "
        "the execution providers the imported onnxruntime offers, and which extras are installed. Two ONNX "
        "Runtime distributions at once (onnxruntime + onnxruntime-gpu) are reported with the command that "
        "repairs the environment. Exit 1 when there is something to fix.",
        run=run,
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="also describe an exported model directory: whether it can reuse a shared prompt prefix")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def model_report(model_dir: str) -> dict:
    """What an exported directory can do: ``prefix_kv`` (run a rerank call's shared prompt prefix once,
    ``Reranker(share_prefix=...)``) and the fix when it cannot. A problem when the directory is unreadable."""
    from vlrank.errors import ModelDirectoryError
    from vlrank.modeldir import read_manifest

    try:
        m = read_manifest(model_dir)
    except ModelDirectoryError as exc:
        return {"path": model_dir, "problem": str(exc)}
    note = None if m.prefix_kv or m.task != "rerank" else (
        "exported without prefix inputs: every pair runs its full prompt; re-export the checkpoint with this "
        "vlrank (`vlrank export SRC OUT`: rerank exports take prefixes by default) to score the query once per call")
    return {"path": model_dir, "task": m.task, "prefix_kv": m.prefix_kv, "note": note}


def report(model: str | None = None) -> dict:
    """The doctor's findings as a dict (``problems`` lists what to fix, one line each); ``model``: an exported
    directory to describe as well."""
    from vlrank.engine.ort_install import import_onnxruntime, install_problem, installed_distributions
    from vlrank.extras import MODULE_EXTRAS
    from vlrank.version import __version__

    found = installed_distributions()
    problems: list[str] = []
    problem = install_problem(found)
    if problem:
        problems.append(problem)
    providers: list[str] | None = None
    ort_version = None
    if len(found) == 1:
        try:
            ort = import_onnxruntime()
            providers = list(ort.get_available_providers())
            ort_version = ort.__version__
        except Exception as exc:  # noqa: BLE001 - a broken install is a finding, not a crash
            problems.append(str(exc))
    if "onnxruntime-gpu" in found and providers is not None and "CUDAExecutionProvider" not in providers:
        problems.append("onnxruntime-gpu is installed but offers no CUDAExecutionProvider; reinstall it: "
                        'pip uninstall -y onnxruntime onnxruntime-gpu && pip install "vlrank[gpu]"')
    extras: dict[str, bool] = {}
    for module, extra in MODULE_EXTRAS.items():
        present = importlib.util.find_spec(module) is not None
        extras[extra] = extras.get(extra, True) and present
    described = None
    if model is not None:
        described = model_report(model)
        if "problem" in described:
            problems.append(described["problem"])
    return {
        "model": described,
        "vlrank": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": _version("numpy"),
        "onnx": _version("onnx"),
        "onnxruntime_distributions": found,
        "onnxruntime": ort_version,
        "providers": providers,
        "extras": extras,
        "problems": problems,
    }


def run(args: argparse.Namespace) -> int:
    info = report(getattr(args, "model", None))
    if args.json:
        write_json(info, indent=2)
    else:
        dists = ", ".join(f"{n} {v}" for n, v in sorted(info["onnxruntime_distributions"].items())) or "none"
        lines = [
            f"vlrank       {info['vlrank']} (Python {info['python']}, {info['platform']})",
            f"numpy        {info['numpy']}",
            f"onnx         {info['onnx']}",
            f"ONNX Runtime {dists}",
            f"providers    {', '.join(info['providers']) if info['providers'] else 'unavailable'}",
            "extras       " + ", ".join(f"{e} {'yes' if ok else 'no'}" for e, ok in sorted(info["extras"].items())),
        ]
        m = info["model"]
        if m is not None and "problem" not in m:
            lines.append(f"model        {m['path']} ({m['task']}): shared-prefix reuse "
                         f"{'yes' if m['prefix_kv'] else 'no'}" + (f" — {m['note']}" if m["note"] else ""))
        print("\n".join(lines))
    for problem in info["problems"]:
        print(f"vlrank doctor: warning: {problem}", file=sys.stderr)
    return 1 if info["problems"] else 0
