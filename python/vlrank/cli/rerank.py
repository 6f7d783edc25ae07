"""``vlrank rerank --model M --query Q (--document D ... | --documents FILE.jsonl) [--top-n N]``: JSON on stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vlrank.errors import InvalidInputError, VlrankError

EXAMPLES = """examples:
  vlrank rerank --model out/rr --query "capital of France?" --document "Paris" --document "Berlin"
  vlrank rerank --model out/rr --query "red logo" --documents docs.jsonl --top-n 3 --no-documents
  # docs.jsonl, one document per line:
  #   "a plain text document"
  #   {"content": [{"type": "image_url", "image_url": {"url": "file:///data/page1.png"}}]}
"""

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rerank", help="rerank documents against a query (IONOS-shaped JSON on stdout)",
        description="Score documents against a query and print the IONOS rerank result (JSON) on stdout. "
        "Errors go to stderr with a non-zero exit code.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="exported model directory, checkpoint directory or hub id")
    p.add_argument("--query", required=True, help="the query text")
    p.add_argument("--document", action="append", default=[], help="a document text (repeatable)")
    p.add_argument("--documents", type=Path, default=None,
                   help="a JSON-lines file, one document per line (a JSON string or an IONOS/OpenAI document object)")
    p.add_argument("--top-n", type=int, default=None)
    p.add_argument("--instruction", default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--no-documents", action="store_true", help="leave the documents out of the results")
    p.add_argument("--providers", default=None, help="auto (default), cpu or cuda")
    p.set_defaults(func=run)


def read_jsonl(path: Path, *, field: str) -> list:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInputError(f"{field}: cannot read {path} ({exc})", field=field) from exc
    except UnicodeDecodeError as exc:  # (QA fix) was an uncaught traceback
        raise InvalidInputError(f"{field}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); write the "
                                "JSON lines file in UTF-8", field=field) from exc
    items = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{field}: {path}:{n} is not JSON ({exc}); write one JSON value per line",
                                        field=field) from exc
    return items


def write_json(obj: object, *, indent: int | None = None) -> None:
    """Print ``obj`` as one JSON document on stdout.

    (QA fix) A closed pipe (``vlrank rerank ... | head``) or a full disk used to end in a traceback. A reader
    that went away is not our error: exit 1 quietly (as Python's docs advise for SIGPIPE). Other write errors
    are reported as a one-line error. Either way stdout is pointed at /dev/null so that the interpreter's
    final flush does not print "Exception ignored" as well."""
    try:
        json.dump(obj, sys.stdout, ensure_ascii=False, indent=indent)
        sys.stdout.write("\n")
        sys.stdout.flush()
    except OSError as exc:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(exc, BrokenPipeError):
            raise SystemExit(1) from None
        raise VlrankError(f"stdout: cannot write the result ({exc.strerror or exc}); write to a file or pipe "
                          "with free space", field="stdout") from None


def run(args: argparse.Namespace) -> int:
    from vlrank.reranker import Reranker

    docs = list(args.document)
    if args.documents is not None:
        docs += read_jsonl(args.documents, field="--documents")
    if not docs:
        raise InvalidInputError("no documents: pass --document TEXT (repeatable) or --documents FILE.jsonl",
                                field="documents")
    rr = Reranker(args.model, max_length=args.max_length, providers=args.providers)
    out = rr.rerank(args.query, docs, top_n=args.top_n, instruction=args.instruction,
                    return_documents=not args.no_documents)
    write_json(out)
    return 0
