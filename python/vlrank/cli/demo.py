"""``vlrank demo``: rerank sample documents with an offline, labelled, random tiny model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlrank.cli.common import add_command

EXAMPLES = """examples:
  vlrank demo                 # build the tiny random model once, then rerank 3 texts + 1 image
  vlrank demo --top-n 2       # keep the best two
  VLRANK_CACHE=/tmp/vl vlrank demo
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "demo",
        help="rerank sample documents with an offline tiny model (random weights, real pipeline)",
        description="Run the whole vlrank pipeline offline: a randomly initialised tiny Qwen3-VL reranker "
        "with the real Qwen3 vocabulary is written once, exported to ONNX and used to rerank three text "
        "documents and one image. Scores are meaningless; everything else is real.",
        examples=EXAMPLES, run=run,
    )
    parser.add_argument("--top-n", type=int, default=None, help="keep only the best N results")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the demo model is kept (default: $VLRANK_CACHE or ~/.cache/vlrank)")


def run(args: argparse.Namespace) -> int:
    from vlrank.demo import BANNER, DEMO_QUERY, run_demo

    print(BANNER, file=sys.stderr)
    print(f"query: {DEMO_QUERY}", file=sys.stderr)
    result = run_demo(cache_dir=args.cache_dir, top_n=args.top_n)
    for item in result["results"]:
        document = item.get("document") or {}
        label = document.get("text") or "[image document]"
        print(f"  {item['relevance_score']:.4f}  #{item['index']}  {label[:70]}", file=sys.stderr)
    print(json.dumps(_short(result), indent=2))
    return 0


def _short(result: dict) -> dict:
    """Data URLs are long: shorten them in what we print (the library result keeps them whole)."""
    text = json.dumps(result)
    if "base64," not in text:
        return result
    out = json.loads(text)
    for item in out["results"]:
        for part in ((item.get("document") or {}).get("multi_modal") or []):
            url = (part.get("image_url") or {}).get("url") if isinstance(part, dict) else None
            if isinstance(url, str) and len(url) > 80:
                part["image_url"]["url"] = url[:60] + f"...({len(url)} chars)"
    return out
