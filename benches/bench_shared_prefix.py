"""Shared prompt prefix: ``share_prefix=False`` (every pair runs its full prompt) vs ``True`` (the query's
prefix runs once per call, each document's suffix against its K/V), docs/s and peak memory side by side.

Cases (one ``rerank`` call each):
  vl-image   Qwen3-VL-2B widths: a 1,024 x 1,280 query image (1,280 image tokens) + a short question against
             16 text documents of ~150 tokens                                     (issue 24 aims >= 3x)
  vl-text    Qwen3-VL-2B widths: a ~100-token text query against 32 documents of ~300 tokens    (>= 1.15x)
  vl-long    Qwen3-VL-2B widths: a 16,000-token text query against 8 documents of ~150 tokens   (>= 4x)
  text       Qwen3-Reranker-0.6B widths: the vl-text call
Models (``--size``): ``real`` = random checkpoints (vlrank.synthetic) at the real widths — Qwen3-VL-2B text
hidden 2048, 16 / 8 heads, head_dim 128, FFN 6144, vision 1024 wide (DeepStack after 3 blocks);
Qwen3-Reranker-0.6B hidden 1024, FFN 3072 — cut to ``--layers`` text (default 4) / ``--vision-layers``
(default 6) layers (decoder costs scale linearly with depth); ``tiny`` = the golden tiny checkpoints at
small sizes (a smoke run: the numbers say nothing). The transformers column is not here yet (bench_vl_rerank.py
times transformers on the shared-query-image scenario). Each (case, mode) runs in its own process; the peak is the resident high-water mark of the
timed call above the loaded model.

    python benches/bench_shared_prefix.py [--size tiny|real] [--layers 4] [--vision-layers 6]
        [--scale 1.0] [--cases vl-image,vl-text,vl-long,text] [--workdir /tmp/vlrank-prefix] [--no-write] [--json]
``--scale`` multiplies every token count (0.1 for a quick look).

Expected time at ``--size real`` on the 2-core machine (estimated from FLOP counts, not measured): the first
run writes and exports two random checkpoints (a few minutes); vl-image + vl-text + text ~10 min; vl-long ~20-30
min, nearly all of it the ``off`` mode's eight 16k-token prompts (``--cases vl-long --scale 0.25`` is ~16x less).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import benchlib

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "models"
WORDS = ("the city council report water supply district river pump station winter summer rainfall "
         "reservoir pipe network pressure repair budget engineer survey household demand forecast").split()
# case -> (model kind, query text tokens, query image (height, width) or None, documents, document tokens)
CASES = {
    "vl-image": ("vl", 12, (1024, 1280), 16, 150),
    "vl-text": ("vl", 100, None, 32, 300),
    "vl-long": ("vl", 16000, None, 8, 150),
    "text": ("text", 100, None, 32, 300),
}


def prepare_models(args) -> dict[str, Path]:
    from vlrank.export import export

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.size == "tiny":
        sources = {"text": GOLDEN / "tiny-qwen3-text", "vl": GOLDEN / "tiny-qwen3-vl"}
    else:
        from vlrank.synthetic import TextShape, VisionShape, write_random_qwen3, write_random_qwen3_vl

        depth = f"{args.layers}-{args.vision_layers}"
        sources = {"text": work / f"ckpt-text-{depth}", "vl": work / f"ckpt-vl-{depth}"}
        tok = benchlib.tokenizer_json()
        if not (sources["text"] / "model.safetensors").is_file():
            write_random_qwen3(sources["text"], shape=TextShape(hidden=1024, layers=args.layers, heads=16, kv_heads=8,
                                                                head_dim=128, intermediate=3072), tokenizer_json=tok)
        if not (sources["vl"] / "model.safetensors").is_file():
            stack = tuple(range(0, args.vision_layers, 2))[:min(3, args.layers)]
            write_random_qwen3_vl(sources["vl"], text=TextShape(hidden=2048, layers=args.layers, heads=16, kv_heads=8,
                                                                head_dim=128, intermediate=6144),
                                  vision=VisionShape(hidden=1024, depth=args.vision_layers, heads=16, intermediate=4096,
                                                     num_position_embeddings=2304, deepstack_layers=stack),
                                  tokenizer_json=tok)
    out = {}
    for kind, src in sources.items():
        dest = work / f"export-{args.size}-{kind}-{args.layers}-{args.vision_layers}"
        if not (dest / "vlrank.json").is_file():
            benchlib.eprint(f"exporting {dest} ...")
            export(src, dest, task="rerank", prefix_kv=True, progress=False)
        out[kind] = dest
    return out


def text_of(model, tokens: int, seed: int) -> str:
    tok = model.runner.tokenizer
    words = " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(tokens + 16))
    return tok.decode(tok.encode(words)[:tokens])


def call_of(model, case: str, scale: float) -> dict:
    _, q_tokens, image, n_docs, d_tokens = CASES[case]
    q_tokens, d_tokens = max(4, int(q_tokens * scale)), max(4, int(d_tokens * scale))
    query: object = text_of(model, q_tokens, 0)
    if image is not None:
        import base64
        import io

        import numpy as np
        from PIL import Image

        h, w = (max(64, int(side * scale ** 0.5)) for side in image)
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        query = {"content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": query}]}
    return {"query": query, "documents": [text_of(model, d_tokens, d + 1) for d in range(n_docs)]}


def one(args) -> None:
    """Child process: load, warm up, reset the high-water mark, time one call, print JSON."""
    import vlrank

    share = {"off": False, "on": True}[args.mode]
    model = vlrank.Reranker(args.model, share_prefix=share, max_length=args.max_length)
    call = call_of(model, args.case, args.scale)
    model.rerank("warm up", ["every weight page", "resident"])  # short: vl-long's full prompts cost minutes each
    base = benchlib.reset_hwm()
    start = time.perf_counter()
    result = model.rerank(call["query"], call["documents"], return_documents=False)
    seconds = time.perf_counter() - start
    scores = [r["relevance_score"] for r in sorted(result["results"], key=lambda r: r["index"])]
    print(json.dumps({"seconds": seconds, "docs_per_s": len(call["documents"]) / seconds,
                      "peak_mib": benchlib.hwm_mib() - base, "tokens": result["usage"]["prompt_tokens"],
                      "scores": scores}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=["tiny", "real"], default="tiny")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vision-layers", type=int, default=6)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--max-length", type=int, default=20000, help="the rerankers' max_length (vl-long needs 16k+)")
    p.add_argument("--workdir", default="/tmp/vlrank-prefix")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["off", "on"], help=argparse.SUPPRESS)
    p.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        one(args)
        return 0
    models = prepare_models(args)
    info, load_start = benchlib.machine(), benchlib.load_average()
    rows, doc = [], {}
    for case in args.cases.split(","):
        got = {}
        for mode in ("off", "on"):
            cmd = [sys.executable, __file__, "--one", "--mode", mode, "--case", case, "--scale", str(args.scale),
                   "--model", str(models[CASES[case][0]]), "--max-length", str(args.max_length)]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if run.returncode != 0:
                benchlib.eprint(run.stderr)
                return 1
            got[mode] = json.loads(run.stdout.strip().splitlines()[-1])
        off, on = got["off"], got["on"]
        delta = max(abs(a - b) for a, b in zip(off["scores"], on["scores"]))
        doc[case] = {**got, "speedup": off["seconds"] / on["seconds"], "max_score_delta": delta}
        rows.append(f"| {case} | {off['tokens']:,} | {off['docs_per_s']:.2f} | {on['docs_per_s']:.2f} | "
                    f"{off['seconds'] / on['seconds']:.2f}x | {off['peak_mib']:.0f} MiB | {on['peak_mib']:.0f} MiB | "
                    f"{delta:.1e} |")
    depth = (f"real widths, {args.layers} text / {args.vision_layers} vision layers" if args.size == "real"
             else "tiny golden checkpoints: a smoke run only")
    md = "\n".join([
        "## Shared prompt prefix (benches/bench_shared_prefix.py)", "",
        f"Models: {depth}; token counts x{args.scale}. transformers column: not in this bench (bench_vl_rerank.py times transformers on the shared-query-image scenario). "
        + benchlib.machine_line(info, load_start, benchlib.load_average()), "",
        "| case | tokens (full prompts) | off docs/s | on docs/s | speed-up | off peak | on peak | max |Δ score| |",
        "|---|---:|---:|---:|---:|---:|---:|---:|", *rows])
    return benchlib.finish(md, section="bench_shared_prefix", args=args, doc=doc)


if __name__ == "__main__":
    sys.exit(main())
