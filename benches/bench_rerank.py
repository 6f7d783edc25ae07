"""End-to-end CPU text reranking: vlrank vs the transformers reference, same checkpoint, float32, same
thread count.

A random Qwen3 checkpoint of the released layout (hidden 256, 4 layers, 8 heads / 4 KV heads, head_dim
32, intermediate 768, the real 151,936-token vocabulary and tokenizer) reranks 32 documents of ~200
tokens against one query:

- vlrank: ``vlrank.export`` (float32) then ``Reranker.rerank`` (prompt building, batching, ONNX Runtime,
  result), ONNX Runtime pinned to ``--threads`` intra-op threads;
- transformers, the official Qwen3-Reranker README recipe (benches/reference_transformers.py, run in its
  own venv with torch pinned to the same threads): ``loop`` (one pair per forward) and ``batched`` (all
  pairs in one left-padded forward), plus ``batched, last-token logits``: the same recipe asking
  transformers for the last position's logits only (``logits_to_keep=1``). The official recipe computes
  the 151,936-wide LM head at every position; at hidden 256 that head dominates its cost, so the third
  row is the like-for-like compute comparison.

Scores are checked against the reference (max |Δ| printed). Prints a table and replaces the
``bench_rerank`` section of benches/RESULTS.md.

    python benches/bench_rerank.py [--quick] [--reference-python PATH] [--threads 2] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import benchlib
import vlrank
from vlrank.synthetic import TextShape, write_random_qwen3

SHAPE = TextShape(hidden=256, layers=4, heads=8, kv_heads=4, head_dim=32, intermediate=768)
# --real-width: Qwen3-Reranker-0.6B's widths (hidden 1024, 16 / 8 heads, head_dim 128, FFN 3072), 4 layers.
REAL_WIDTH = TextShape(hidden=1024, layers=4, heads=16, kv_heads=8, head_dim=128, intermediate=3072)
QUERY = "Which city is the capital of France and what river runs through it?"
WORDS = ("the of and to in is was for on that with as by at from this are be it an or which search query "
         "document capital city river mountain data model rank score image text language paris france "
         "berlin germany london england history science music market energy policy").split()


def make_documents(tokenizer, *, n: int, tokens: int, seed: int) -> list[str]:
    """``n`` documents of exactly ``tokens`` tokens each (common words, decoded from the token ids so the
    count is exact)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        ids = tokenizer.encode(" ".join(rng.choice(WORDS, size=tokens * 2)).capitalize())[:tokens]
        docs.append(tokenizer.decode(ids))
    return docs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 documents, 2 repeats, no RESULTS.md")
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--doc-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--reference-repeats", type=int, default=3,
                    help="timed calls per reference mode (the official loop is slow)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of both stacks")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="vlrank weight storage (compute is float32 either way)")
    ap.add_argument("--reference-python", default=None,
                    help="a Python with torch + transformers (default /work/refvenv/bin/python if present)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the checkpoint and export here")
    ap.add_argument("--real-width", action="store_true",
                    help="Qwen3-Reranker-0.6B widths, 4 layers (own RESULTS.md section bench_rerank_real_width)")
    ap.add_argument("--no-write", action="store_true", help="do not touch benches/RESULTS.md")
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.repeats, args.reference_repeats, args.no_write = 8, 2, 1, True
    if args.real_width:
        global SHAPE
        SHAPE = REAL_WIDTH

    ref_python = benchlib.reference_or_note(args)
    info = benchlib.machine()
    load_start = benchlib.load_average()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vlrank-bench-rerank-"))
    ckpt = work / ("Qwen3-Reranker-random" + ("-real-width" if args.real_width else ""))
    if not (ckpt / "model.safetensors").is_file():
        write_random_qwen3(ckpt, shape=SHAPE, seed=0, tokenizer_json=benchlib.tokenizer_json())
    t0 = time.perf_counter()
    model_dir = vlrank.export(ckpt, work / f"exported-{ckpt.name}-{args.dtype}", dtype=args.dtype, progress=False)
    export_s = time.perf_counter() - t0

    rr = vlrank.Reranker(model_dir, providers="cpu")
    benchlib.pin_threads(rr, args.threads)
    docs = make_documents(rr.runner.tokenizer, n=args.docs, tokens=args.doc_tokens, seed=1)

    rows = []  # (label, seconds list, scores in document order)
    first = benchlib.timed(lambda: rr.rerank(QUERY, docs), args.repeats)
    v_seconds, v_scores = first.seconds, benchlib.scores_in_order(first.result, len(docs))
    rows.append(("vlrank (ONNX Runtime)", v_seconds, v_scores))
    versions = {}
    if ref_python is not None:
        spec = {"query": QUERY, "documents": docs, "instruction": None, "repeats": args.reference_repeats}
        for label, mode, last in (("transformers loop (official)", "loop", False),
                                  ("transformers batched (official)", "batched", False),
                                  ("transformers batched, last-token logits", "batched", True)):
            benchlib.eprint(f"reference: {label} ...")
            out = benchlib.run_reference(ref_python, "text-rerank", ckpt, spec, mode=mode, threads=args.threads,
                                         last_token_only=last)
            rows.append((label, out["seconds"], out["scores"]))
            versions = {"torch": out["torch"], "transformers": out["transformers"]}
        # Shared machines: the load drifts during the minutes the reference takes; vlrank timed again
        # after it shows how much (ratios use the first vlrank row).
        again = benchlib.timed(lambda: rr.rerank(QUERY, docs), args.repeats).seconds
        rows.append(("vlrank again, after the reference runs", again, v_scores))
    load_end = benchlib.load_average()

    prompt_tokens = first.result["usage"]["prompt_tokens"]
    v_p50 = benchlib.p50(v_seconds)
    table = ["| stack | docs/s | p50 per rerank call | best call | vlrank speed-up (p50 ratio) | max abs score diff vs vlrank |",
             "|---|---:|---:|---:|---:|---:|"]
    summary = []
    for label, seconds, scores in rows:
        p = benchlib.p50(seconds)
        diff = float(np.max(np.abs(np.asarray(scores) - np.asarray(v_scores))))
        table.append(f"| {label} | {len(docs) / p:,.1f} | {p * 1000:,.1f} ms | {min(seconds) * 1000:,.1f} ms | {p / v_p50:.2f}x | "
                     f"{'—' if scores is v_scores else f'{diff:.1e}'} |")
        summary.append({"stack": label, "docs_per_s": round(len(docs) / p, 2), "p50_s": round(p, 4),
                        "speedup": round(p / v_p50, 3), "max_abs_diff": diff, "seconds": seconds})
    ref_versions = benchlib.versions_line(versions, ref_python)
    md = "\n".join([
        "## Text reranking, end to end on CPU (bench_rerank.py)",
        "",
        f"Random Qwen3 (hidden {SHAPE.hidden}, {SHAPE.layers} layers, {SHAPE.heads} heads / {SHAPE.kv_heads} KV, "
        f"head_dim {SHAPE.head_dim}, intermediate {SHAPE.intermediate}, vocab {SHAPE.vocab}, real tokenizer); "
        f"{len(docs)} documents of {args.doc_tokens} tokens, one query ({prompt_tokens / len(docs):.0f} prompt "
        f"tokens per pair); float32 compute on both sides (vlrank export dtype {args.dtype}), {args.threads} "
        f"intra-op threads on both sides; p50 of {args.repeats} vlrank / {args.reference_repeats} reference calls after a warm-up each. vlrank export took "
        f"{export_s:.1f} s.",
        "",
        *table,
        "",
        "The official recipe (`loop` / `batched`) computes the full-vocabulary LM head at every position; "
        "`last-token logits` is the same recipe with `logits_to_keep=1` (the compute vlrank does). Score "
        "differences are float32 rounding (same weights, same prompts).",
        "",
        benchlib.machine_line(info, load_start, load_end) + ref_versions,
    ])
    return benchlib.finish(md, section="bench_rerank" + ("_real_width" if args.real_width else ""), args=args,
                           doc={"bench": "rerank", "rows": summary, "load": [load_start, load_end], **info})


if __name__ == "__main__":
    sys.exit(main())
