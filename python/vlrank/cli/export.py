"""``vlrank export SRC OUT [--task rerank|embed] [--precision float32|float16|bfloat16] [--dtype ...]``."""

from __future__ import annotations

import argparse

from vlrank.cli.common import write_json

EXAMPLES = """examples:
  vlrank export Qwen/Qwen3-VL-Reranker-2B out/rr            # hub id; task from the name
  vlrank export ./Qwen3-VL-Embedding-2B out/emb --task embed --dtype float16
  vlrank export Qwen/Qwen3-VL-Reranker-2B out/rr-gpu --precision bfloat16   # half compute, for CUDA
  vlrank export ./my-ckpt out/rr --task rerank --name my-reranker --quiet
"""

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a Hugging Face checkpoint (directory or hub id) to a vlrank model directory",
        description="Build the ONNX graphs (no torch needed) + vlrank.json + tokenizer.json from a "
        "Qwen3-Reranker, Qwen3-VL-Reranker or Qwen3-VL-Embedding checkpoint.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="checkpoint directory or Hugging Face hub id (owner/name)")
    p.add_argument("out", help="output directory")
    p.add_argument("--task", choices=["rerank", "embed"], default=None,
                   help="default: from the checkpoint name (-Reranker / -Embedding)")
    p.add_argument("--precision", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="compute dtype of the graphs: float32 runs on the CPU (and CUDA); float16 / bfloat16 "
                   "run MatMuls and attention in half precision and load only with CUDA "
                   "(onnxruntime-gpu). Default float32")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="weight storage in the ONNX files; default: the --precision (float32 weights for "
                   "float32 compute may also be stored as float16 / bfloat16)")
    p.add_argument("--name", default=None, help="model name reported in responses (default: from SRC)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlrank.engine.manifest import read_manifest
    from vlrank.export import export

    dtype = args.dtype or args.precision
    out = export(args.src, args.out, task=args.task, dtype=dtype, precision=args.precision,
                 progress=not args.quiet, name=args.name)
    m = read_manifest(out)
    summary = {"out": str(out), "name": m.name, "family": m.family, "task": m.task, "dtype": m.dtype,
               "precision": m.precision, "provider": m.provider, "files": m.files}
    write_json(summary, indent=2)
    return 0
