"""``vlrank rerank --model M --query Q (--document D | --document-image PATH |
--document-video PATH | --document-pdf FILE ... | --documents FILE.jsonl)
[--top-n N] [--raw-scores] [--max-tokens-per-doc N] [--truncate END|NONE] [--chunk ...]``: JSON on stdout. Documents keep their command-line order (then the file's)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlrank.cli.common import add_model_command, add_model_options, collect_inputs, load_model, write_json
from vlrank.cli.media import (add_pdf_options, add_video_options, expand_pdfs, image_document, name_pages, pdf_file,
                              video_document, with_video_options)

EXAMPLES = """examples:
  vlrank rerank --model out/rr --query "capital of France?" --document "Paris" --document "Berlin"
  vlrank rerank --model out/rr --query "red logo" --documents docs.jsonl --top-n 3 --no-documents
  vlrank rerank --model out/rr --query "a beach" --document-image a.jpg --document-image b.png --raw-scores
  vlrank rerank --model out/rr --query "tax rules" --documents long.jsonl --max-tokens-per-doc 512
  vlrank rerank --model out/rr --query "tax rules" --documents long.jsonl --chunk --chunk-tokens 512 --max-chunks 8
  vlrank rerank --model out/rr --query "a goal is scored" --document-video match1.mp4 --document-video match2.mp4 \\
      --fps 2 --max-frames 32
  vlrank rerank --model out/rr --query "revenue by quarter" --document-pdf report.pdf --dpi 100 --top-n 3
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
    p.add_argument("--document-pdf", dest="document", action="append", type=pdf_file, metavar="FILE",
                   help="a PDF: each page a document (repeatable; in order with --document); results name file and page")
    p.add_argument("--documents", type=Path, default=None,
                   help="a JSON-lines file, one document per line (a JSON string or an IONOS/OpenAI document object)")
    p.add_argument("--top-n", type=int, default=None)
    p.add_argument("--instruction", default=None)
    p.add_argument("--no-documents", action="store_true", help="leave the documents out of the results")
    p.add_argument("--raw-scores", action="store_true",
                   help="add raw_score (the logit; relevance_score = sigmoid(raw_score)) to each result")
    long = p.add_argument_group("long documents")
    long.add_argument("--max-tokens-per-doc", type=int, default=None, metavar="N",
                      help="cut each document's text after its N-th token (images and videos are never cut)")
    long.add_argument("--max-tokens-per-query", type=int, default=None, metavar="N",
                      help="cut the query's text after its N-th token")
    long.add_argument("--truncate", choices=["END", "NONE"], default="END",
                      help="END cuts what is too long (default); NONE refuses it with an error naming the document")
    long.add_argument("--chunk", action="store_true",
                      help="score a long document as windows and keep the best (its result gains \"chunk\")")
    long.add_argument("--chunk-tokens", type=int, default=None, metavar="N",
                      help="window size with --chunk (default: the largest that fits max_length)")
    long.add_argument("--chunk-overlap", type=int, default=None, metavar="N",
                      help="tokens shared by neighbouring windows (default: 1/8 of the window)")
    long.add_argument("--max-chunks", type=int, default=None, metavar="N", help="most windows per document (16)")
    add_video_options(p)
    add_pdf_options(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from vlrank.tasks import Reranker

    docs = collect_inputs(args.document, args.documents, file_flag="--documents", field="documents",
                          missing="no documents: pass --document TEXT / --document-image / --document-video PATH / "
                                  "--document-pdf FILE (repeatable) or "
                                  "--documents FILE.jsonl")
    docs, pages = expand_pdfs(with_video_options(docs, args), args)
    rr = load_model(Reranker, args)
    out = rr.rerank(args.query, docs, top_n=args.top_n, instruction=args.instruction,
                    return_documents=not args.no_documents, raw_scores=args.raw_scores,
                    max_tokens_per_doc=args.max_tokens_per_doc, max_tokens_per_query=args.max_tokens_per_query,
                    truncate=args.truncate, long_documents="chunk" if args.chunk else "truncate",
                    chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap,
                    max_chunks_per_doc=args.max_chunks)
    name_pages(out["results"], pages)
    write_json(out)
    return 0
