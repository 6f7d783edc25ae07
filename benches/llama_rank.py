"""llama.cpp's side of benches/bench_cpu_precision.py, run by the bench venv's Python (llama-cpp-python, never a
vlrank dependency; see docs/notes.md "Round 5 — h5" for how that venv is built).

Two subcommands, each printing one JSON line:

  quantize  --src F32.gguf --dst OUT.gguf --type q8_0|q4_k_m [--threads N]
            llama.cpp's own quantizer (``llama_model_quantize``, what the ``llama-quantize`` tool calls), so no
            separate tool build is needed.
  rank      --model M.gguf --spec SPEC.json [--threads N] [--flash-attn]
            SPEC: {"ids": [[token ids of one prompt], ...], "texts": [prompt text, ...] (optional)}. Scores every
            prompt with the GGUF's pooling: rank (Qwen3-Reranker's yes/no head, softmax -> P(yes), the score
            vlrank returns) or, where the converter wrote no head, last (the same decoder compute, no score).

Prompts arrive as token ids built by vlrank's own prompt builder, so both stacks score the very same tokens; with
"texts", llama.cpp's tokenizer is also run on the prompt text and the JSON says whether its ids are identical.
Each prompt is one llama_decode of one sequence with the memory cleared between: packing several sequences in one
batch makes every token attend (masked) over the whole batch's KV cells, which costs more than it saves on a CPU.
The resident high-water mark is reset after a warm-up call, so ``peak_rss_mib`` is the process's peak during the
timed pass (mmapped weights it touched included), comparable to vlrank's child in the same bench.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402  (stdlib only at import: safe in this venv)

FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "f32": "LLAMA_FTYPE_ALL_F32"}


def quantize(args) -> dict:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = args.threads
    params.ftype = getattr(llama_cpp, FTYPES[args.type])
    t = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(args.src.encode(), args.dst.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({args.src} -> {args.type}) returned {rc}")
    return {"seconds": time.perf_counter() - t, "bytes": Path(args.dst).stat().st_size}


def _model_meta(model_ptr) -> dict:
    """The GGUF's general metadata llama.cpp read (pooling, classifier labels, file type)."""
    import ctypes

    import llama_cpp

    out = {}
    buf = ctypes.create_string_buffer(512)
    for key in ("general.architecture", "general.file_type", "qwen3.pooling_type", "general.name"):
        if llama_cpp.llama_model_meta_val_str(model_ptr, key.encode(), buf, len(buf)) >= 0:
            out[key] = buf.value.decode(errors="replace")
    return out


def rank(args) -> dict:
    import llama_cpp

    spec = json.loads(Path(args.spec).read_text())
    ids: list[list[int]] = spec["ids"]
    longest = max(len(r) for r in ids)
    n_ctx = -(-longest // 256) * 256  # one sequence per decode: the context holds the longest prompt
    t = time.perf_counter()
    llm = llama_cpp.Llama(args.model, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,
                          n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=args.threads,
                          n_threads_batch=args.threads, flash_attn=args.flash_attn, verbose=False,
                          # float32 K/V: the attention runs in float32, as in vlrank's graphs.
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    load_s = time.perf_counter() - t
    pooling = llm.pooling_type()
    n_cls_out = llama_cpp.llama_model_n_cls_out(llm._model.model)
    if pooling != llama_cpp.LLAMA_POOLING_TYPE_RANK:
        # The converter marked no reranker head: time the same decoder with last-token pooling instead.
        llm.close()
        llm = llama_cpp.Llama(args.model, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
                              n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=args.threads,
                              n_threads_batch=args.threads, flash_attn=args.flash_attn, verbose=False,
                              type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    ranked = llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_RANK

    def score(row: list[int]) -> float | None:
        llm._ctx.kv_cache_clear()
        llm._batch.reset()
        llm._batch.add_sequence(row, 0, True)
        llm._ctx.decode(llm._batch)
        out = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
        return float(out[0]) if ranked else None  # rank: softmax([yes, no])[0] = P(yes)

    score(ids[0])  # warm-up: weight pages resident, graph allocated
    base = benchlib.reset_hwm()
    t = time.perf_counter()
    scores = [score(r) for r in ids]
    seconds = time.perf_counter() - t
    doc = {"seconds": seconds, "tokens": sum(map(len, ids)), "scores": scores if ranked else None,
           "pooling": "rank" if ranked else "last", "n_cls_out": n_cls_out, "load_s": load_s,
           "peak_rss_mib": benchlib.hwm_mib(), "rss_before_mib": base, "threads": args.threads,
           "meta": _model_meta(llm._model.model), "llama_cpp_python": llama_cpp.__version__}
    if spec.get("texts"):
        own = [llm.tokenize(text.encode(), add_bos=False, special=True) for text in spec["texts"]]
        doc["tokenizer_mismatches"] = sum(a != b for a, b in zip(own, ids))
    llm.close()
    return doc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("--src", required=True)
    q.add_argument("--dst", required=True)
    q.add_argument("--type", choices=sorted(FTYPES), required=True)
    q.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("rank")
    r.add_argument("--model", required=True)
    r.add_argument("--spec", required=True)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--flash-attn", action="store_true")
    args = p.parse_args()
    print(json.dumps(quantize(args) if args.cmd == "quantize" else rank(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
