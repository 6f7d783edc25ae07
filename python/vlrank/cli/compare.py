"""``vlrank compare REF CAND --queries FILE.jsonl [--json] [--max-abs-diff X] [--min-spearman Y] [--top-k K]
[--max-lines N]``: how far an export moves the scores / embeddings of another on your own data.

Exit status: 0 when every gate holds, 1 when a gate fails (the only exit 1, so a script can tell a moved
ranking from a bad call), 2 on a usage error — argparse's own and every typed input error (a missing file, a
malformed line, a file of the other task, two models of different families)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlrank.cli.common import add_command, write_json

EXAMPLES = """examples:
  vlrank compare out/rr out/rr-int8 --queries sample.jsonl
  vlrank compare out/rr out/rr-int4 --queries sample.jsonl --min-spearman 0.95 --max-abs-diff 0.05 --json
  vlrank compare Qwen/Qwen3-VL-Embedding-2B out/emb-int8 --queries inputs.jsonl
  # sample.jsonl, one rerank call per line (a sample of your traffic):
  #   {"query": "capital of France?", "documents": ["Paris", "Berlin"], "instruction": "Find the answer"}
  # inputs.jsonl, one embed call per line (Spearman is over the cosines of every pair in a line):
  #   {"input": ["a red logo", {"content": [{"type": "image_url", "image_url": {"url": "file:///d/p.png"}}]}]}
"""

SUMMARY = (("max_abs_diff", "max |Δ|"), ("median_abs_diff", "median |Δ|"), ("spearman_min", "Spearman min"),
           ("spearman_mean", "Spearman mean"), ("top_k_agreement", "top-k agreement"),
           ("cosine_min", "cosine min"), ("cosine_mean", "cosine mean"))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "compare", help="compare two model directories (exports or checkpoints) on your own inputs",
        description="Run REF and CAND on the same JSON-lines file (rerank or embed calls) and report score "
        "differences, per-line Spearman, top-k agreement or cosine, and each side's docs/s. Exit 1 when a "
        "gate fails, 2 on a usage error.",
        examples=EXAMPLES, run=run,
    )
    p.add_argument("reference", help="the reference: model directory, checkpoint directory or hub id")
    p.add_argument("candidate", help="the candidate, e.g. a quantized export of the same checkpoint")
    p.add_argument("--queries", type=Path, required=True, metavar="FILE.jsonl",
                   help='one call per line: {"query", "documents", "instruction"?} or {"input", "instruction"?}')
    p.add_argument("--json", action="store_true", help="print the full report as JSON (default: a summary)")
    p.add_argument("--max-abs-diff", type=float, default=None, metavar="X",
                   help="gate: fail (exit 1) when max |Δ| (scores or embedding components) is over X")
    p.add_argument("--min-spearman", type=float, default=None, metavar="Y",
                   help="gate: fail (exit 1) when the lowest per-line Spearman is under Y")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="k of the top-k agreement (rerank; 3)")
    p.add_argument("--max-lines", type=int, default=None, metavar="N",
                   help="refuse a file of more than N lines (default 10000)")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--providers", default=None, help="auto (default), cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from vlrank.compare import DEFAULT_MAX_LINES, compare
    from vlrank.errors import VlrankError

    try:
        report = compare(args.reference, args.candidate, queries=args.queries, top_k=args.top_k,
                         max_lines=args.max_lines or DEFAULT_MAX_LINES, max_abs_diff=args.max_abs_diff,
                         min_spearman=args.min_spearman, max_length=args.max_length, providers=args.providers)
    except VlrankError as exc:  # an input the user named: a usage error, so exit 1 stays "a gate failed"
        print(f"vlrank: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        write_json(report, indent=2)
    else:
        print(_summary(report))
    for name, gate in report["gates"].items():
        if not gate["passed"]:
            print(f"vlrank: gate failed: {name} = {gate['value']:.6g} (limit {gate['limit']:g})", file=sys.stderr)
    return 0 if report["passed"] else 1


def _summary(report: dict) -> str:
    items = "documents" if report["task"] == "rerank" else "inputs"
    lines = [f"{report['task']} ({report['family']}): {report['lines']} lines, {report[items]} {items}"]
    for side in ("reference", "candidate"):
        s = report[side]
        quant = f", {s['quantization']['scheme']}" if s.get("quantization") else ""
        speed = f"{s['docs_per_s']:.2f} {items}/s" if s["docs_per_s"] else "-"
        lines.append(f"  {side:<9} {s['model']} ({s['precision']}{quant}): {speed}")
    for key, label in SUMMARY:
        if key in report:
            suffix = f" (k={report['top_k']})" if key == "top_k_agreement" else ""
            lines.append(f"  {label + suffix:<24} {report[key]:.6g}")
    for name, gate in report["gates"].items():
        lines.append(f"  gate {name:<19} {'pass' if gate['passed'] else 'FAIL'} "
                     f"({gate['value']:.6g} vs {gate['limit']:g})")
    return "\n".join(lines)
