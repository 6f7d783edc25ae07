"""``vlrank embed --model M [TEXT...] [--image PATH] [--video PATH] [--text T] [--pdf FILE] [--inputs FILE.jsonl]``: JSON on stdout.

Each TEXT argument is one input; the ``--image`` / ``--video`` / ``--text`` parts, in command-line order, form one more
(multimodal) input; then each page of each ``--pdf`` (one input a page); then the lines of ``--inputs``."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlrank.cli.common import add_model_command, add_model_options, collect_inputs, load_model, write_json
from vlrank.cli.media import (add_pdf_options, add_video_options, expand_pdfs, image_file, name_pages, pdf_file, text_part,
                              video_file, with_video_options)

EXAMPLES = """examples:
  vlrank embed --model out/emb "a red logo" "a blue car"
  vlrank embed --model out/emb "a red logo" --dimensions 256 --encoding-format base64
  vlrank embed --model out/emb --image photo.jpg --text "a photo of a beach"   # one input: image + text
  vlrank embed --model out/emb --video clip.mp4 --text "a cooking video" --fps 2    # one input: video + text
  vlrank embed --model out/emb --pdf report.pdf --dpi 100          # a vector per page, named by file and page
  vlrank embed --model out/emb --inputs inputs.jsonl --instruction "Represent the page for retrieval."
  # inputs.jsonl, one input per line:
  #   "a plain text"
  #   {"content": [{"type": "image_url", "image_url": {"url": "file:///data/page1.png"}}]}
"""

def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_model_command(
        subparsers, "embed", help="embed texts and images (OpenAI/IONOS-shaped JSON on stdout)",
        description="Embed inputs and print the OpenAI/IONOS embeddings result (JSON) on stdout. Errors go to "
        "stderr with a non-zero exit code.",
        examples=EXAMPLES, run=run,
    )
    p.add_argument("texts", nargs="*", help="texts to embed, one input each")
    p.add_argument("--image", dest="parts", action="append", type=image_file, default=[], metavar="PATH",
                   help="an image file, a part of one multimodal input with the --text parts (repeatable)")
    p.add_argument("--video", dest="parts", action="append", type=video_file, metavar="PATH",
                   help="a video file, a part of that multimodal input (repeatable)")
    p.add_argument("--text", dest="parts", action="append", type=text_part, metavar="TEXT",
                   help="a text part of that multimodal input (repeatable)")
    p.add_argument("--pdf", dest="pdfs", action="append", type=pdf_file, default=[], metavar="FILE",
                   help="a PDF: each page one input (repeatable); its results name file and page")
    p.add_argument("--inputs", type=Path, default=None,
                   help="a JSON-lines file, one input per line (a JSON string or an IONOS/OpenAI input object)")
    p.add_argument("--instruction", default=None)
    p.add_argument("--dimensions", type=int, default=None)
    p.add_argument("--encoding-format", choices=["float", "base64"], default="float")
    p.add_argument("--truncate", choices=["END", "START", "NONE"], default="END",
                   help="an input over max_length: END cuts its end (default), START the start of its text, NONE "
                        "refuses it")
    add_video_options(p)
    add_pdf_options(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from vlrank.tasks import Embedder

    given = list(args.texts) + ([{"content": with_video_options(args.parts, args)}] if args.parts else [])
    given, pages = expand_pdfs(given + args.pdfs, args)
    inputs = collect_inputs(given, args.inputs, file_flag="--inputs", field="input",
                            missing="nothing to embed: pass TEXT arguments, --image / --video PATH / --text TEXT, "
                                    "--pdf FILE or --inputs FILE.jsonl")
    em = load_model(Embedder, args)
    out = em.embed(inputs, instruction=args.instruction, dimensions=args.dimensions,
                   encoding_format=args.encoding_format,
                   truncate=args.truncate)
    name_pages(out["data"], pages)
    write_json(out)
    return 0
