"""``vlrank rerank --model M --query Q (--document D | --document-image PATH |
--document-video PATH ... | --documents FILE.jsonl)
[--top-n N] [--raw-scores]``: JSON on stdout. Documents keep their command-line order (then the file's)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlrank.cli.common import add_model_command, add_model_options, collect_inputs, load_model, write_json
from vlrank.cli.media import add_video_options, image_document, video_document, with_video_options

EXAMPLES = """examples:
  vlrank rerank --model out/rr --query "capital of France?" --document "Paris" --document "Berlin"
  vlrank rerank --model out/rr --query "red logo" --documents docs.jsonl --top-n 3 --no-documents
  vlrank rerank --model out/rr --query "a beach" --document-image a.jpg --document-image b.png --raw-scores
  vlrank rerank --model out/rr --query "a goal is scored" --document-video match1.mp4 --document-video match2.mp4 \\
      --fps 2 --max-frames 32
  # docs.jsonl, one document per line:
  #   "a plain text document"
  #   {"content": [{"type": "image_url", "image_url": {"url": "file:///data/page1.png"}}]}
"""

def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_model_command(
        subparsers, "rerank", help="rerank documents against a query (IONOS-shaped JSON on stdout)",
        description="Score documents against a query and print the IONOS rerank result (JSON) on stdout. "
        "Errors go to stderr with a non-zero exit code.",
        examples=EXAMPLES, run=run,
    )
    p.add_argument("--query", required=True, help="the query text")
    p.add_argument("--document", dest="document", action="append", default=[], help="a document text (repeatable)")
    p.add_argument("--document-image", dest="document", action="append", type=image_document, metavar="PATH",
                   help="an image file as a document (repeatable; in order with --document)")
    p.add_argument("--document-video", dest="document", action="append", type=video_document, metavar="PATH",
                   help="a video file as a document (repeatable; in order with --document)")
    p.add_argument("--documents", type=Path, default=None,
                   help="a JSON-lines file, one document per line (a JSON string or an IONOS/OpenAI document object)")
    p.add_argument("--top-n", type=int, default=None)
    p.add_argument("--instruction", default=None)
    p.add_argument("--no-documents", action="store_true", help="leave the documents out of the results")
    p.add_argument("--raw-scores", action="store_true",
                   help="add raw_score (the logit; relevance_score = sigmoid(raw_score)) to each result")
    add_video_options(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from vlrank.tasks import Reranker

    docs = collect_inputs(args.document, args.documents, file_flag="--documents", field="documents",
                          missing="no documents: pass --document TEXT / --document-image / --document-video PATH "
                                  "(repeatable) or "
                                  "--documents FILE.jsonl")
    docs = with_video_options(docs, args)
    rr = load_model(Reranker, args)
    out = rr.rerank(args.query, docs, top_n=args.top_n, instruction=args.instruction,
                    return_documents=not args.no_documents, raw_scores=args.raw_scores)
    write_json(out)
    return 0
