"""``vlrank export SRC OUT [--task rerank|embed] [--precision float32|float16|bfloat16|int8] [--dtype ...]
[--quantize int8|int4 [--block-size N]]``."""

from __future__ import annotations

import argparse
import sys

from vlrank.cli.common import add_command, write_json

EXAMPLES = """examples:
  vlrank export Qwen/Qwen3-VL-Reranker-2B out/rr            # hub id; task from the name
  vlrank export ./Qwen3-VL-Embedding-2B out/emb --task embed --dtype float16
  vlrank export Qwen/Qwen3-VL-Reranker-2B out/rr-gpu --precision bfloat16   # half compute, for CUDA
  vlrank export ./my-ckpt out/rr --task rerank --name my-reranker --quiet
  vlrank export ./Qwen3-VL-Reranker-8B out/rr8-int4 --quantize int4   # 8B on a CPU box (docs/precision.md)
  vlrank export Qwen/Qwen3-Reranker-0.6B out/rr-i8 --quantize int8 --precision int8   # int8 compute, CPU
"""

def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "export",
        help="export a Hugging Face checkpoint (directory or hub id) to a vlrank model directory",
        description="Build the ONNX graphs (no torch needed) + vlrank.json + tokenizer.json from a "
        "Qwen3-Reranker, Qwen3-VL-Reranker or Qwen3-VL-Embedding checkpoint.",
        examples=EXAMPLES, run=run,
    )
    p.add_argument("src", help="checkpoint directory or Hugging Face hub id (owner/name)")
    p.add_argument("out", help="output directory")
    p.add_argument("--task", choices=["rerank", "embed"], default=None,
                   help="default: from the checkpoint name (-Reranker / -Embedding)")
    p.add_argument("--precision", choices=["float32", "float16", "bfloat16", "int8"], default="float32",
                   help="compute dtype of the graphs: float32 runs on the CPU (and CUDA); float16 / bfloat16 "
                   "run MatMuls and attention in half precision and load only with CUDA "
                   "(onnxruntime-gpu); int8 (with --quantize) multiplies the Linears with int8 activations "
                   "on the CPU only. Default float32")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="weight storage in the ONNX files; default: the --precision (float32 for int8; "
                   "float32 weights for float32 compute may also be stored as float16 / bfloat16)")
    p.add_argument("--quantize", default=None, metavar="int8|int4",
                   help="block quantization of every Linear (com.microsoft.MatMulNBits: float32 compute, or "
                   "int8 compute with --precision int8); default: none. Which to pick: docs/precision.md")
    p.add_argument("--block-size", type=int, default=None, metavar="N",
                   help="weights per quantization scale with --quantize: 16, 32, 64, 128 or 256; default 32")
    p.add_argument("--name", default=None, help="model name reported in responses (default: from SRC)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--prefix-kv", action=argparse.BooleanOptionalAction, default=None,
                   help="rerank: a decoder that can run a call's shared prompt prefix (the query) once "
                   "(Reranker share_prefix; default: on for rerank exports)")


def run(args: argparse.Namespace) -> int:
    from vlrank.export import export
    from vlrank.modeldir import read_manifest

    if args.precision == "int8" and args.quantize is None:
        # a usage error (exit 2, as argparse's own): the flag needs its companion flag
        sys.stderr.write("vlrank export: error: --precision int8 multiplies int8 activations by quantized weights: "
                         "pass --quantize int8 --precision int8 (or --quantize int4), or --precision float32\n")
        return 2
    dtype = args.dtype or ("float32" if args.precision == "int8" else args.precision)
    out = export(args.src, args.out, task=args.task, dtype=dtype, precision=args.precision,
                 progress=not args.quiet, name=args.name, prefix_kv=args.prefix_kv, **_quantize_options(args))
    m = read_manifest(out)
    summary = {"out": str(out), "name": m.name, "family": m.family, "task": m.task, "dtype": m.dtype,
               "precision": m.precision, "provider": m.provider, "files": m.files}
    if m.quantization:
        summary["quantization"] = m.quantization
    write_json(summary, indent=2)
    return 0


def _quantize_options(args: argparse.Namespace) -> dict:
    """--quantize / --block-size as export() keywords; export() validates them (typed errors)."""
    from vlrank.errors import InvalidInputError

    if args.quantize is None:
        if args.block_size is not None:
            raise InvalidInputError("--block-size sets the block of a quantized export; pass --quantize int8|int4 "
                                    "with it, or drop --block-size", field="block_size")
        return {}
    options = {"quantize": args.quantize}
    if args.block_size is not None:
        options["block_size"] = args.block_size
    return options
