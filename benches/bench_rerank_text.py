"""Text rerank throughput on CPU: a random Qwen3 checkpoint (hidden 256, 4 layers, real 151,936 vocab,
real Qwen tokenizer), exported with ``vlrank.export``, reranking 32 documents of ~200 tokens.

    python benches/bench_rerank_text.py [--docs 32] [--repeats 7] [--dtype float32] [--json]

Prints docs/s and the p50 / p90 wall time of one ``rerank()`` call (prompt building, batching, ONNX
Runtime, result). The lead's comparison against transformers runs benches/reference_transformers.py in
its own venv on the same checkpoint (pass --keep to keep it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import vlrank
from vlrank.synthetic import TextShape, write_random_qwen3

GOLDEN_TOKENIZER = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "models" / "tokenizer.json"
WORDS = ("the of and to in is was for on that with as by at from this are be it an or which search query "
         "document capital city river mountain data model rank score image text language paris france "
         "berlin germany london england history science music market energy policy").split()


def make_documents(n: int, words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=words)).capitalize() + "." for _ in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--words", type=int, default=120, help="words per document (~200 tokens with the prompt)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--providers", default="cpu")
    ap.add_argument("--keep", type=Path, default=None, help="write the checkpoint and export here and keep them")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="vlrank-bench-"))
    shape = TextShape(hidden=256, layers=4, heads=4, kv_heads=2, head_dim=64, intermediate=768)
    tok = GOLDEN_TOKENIZER if GOLDEN_TOKENIZER.is_file() else None
    ckpt = write_random_qwen3(work / "Qwen3-Reranker-bench", shape=shape, seed=0, tokenizer_json=tok)
    t0 = time.perf_counter()
    model_dir = vlrank.export(ckpt, work / "exported", dtype=args.dtype, progress=False)
    export_s = time.perf_counter() - t0

    rr = vlrank.Reranker(model_dir, providers=args.providers)
    query = "Which city is the capital of France and what river runs through it?"
    docs = make_documents(args.docs, args.words, seed=1)
    warm = rr.rerank(query, docs)  # first run: ORT allocations, arena growth
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        rr.rerank(query, docs)
        times.append(time.perf_counter() - t)
    p50 = statistics.median(times)
    result = {
        "bench": "rerank_text",
        "model": f"random Qwen3 hidden {shape.hidden}, {shape.layers} layers, vocab {shape.vocab}",
        "dtype": args.dtype,
        "providers": rr.runner.session.get_providers(),
        "docs": args.docs,
        "mean_prompt_tokens": warm["usage"]["prompt_tokens"] / args.docs,
        "export_s": round(export_s, 3),
        "p50_s": round(p50, 4),
        "min_s": round(min(times), 4),
        "p90_s": round(sorted(times)[int(0.9 * (len(times) - 1))], 4),
        "docs_per_s": round(args.docs / p50, 1),
        "tokens_per_s": round(warm["usage"]["prompt_tokens"] / p50),
        # Shared machines: the load says how much of the CPU this run really had.
        "load_average_1m": round(__import__("os").getloadavg()[0], 2),
        "cpu_count": __import__("os").cpu_count(),
    }
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
