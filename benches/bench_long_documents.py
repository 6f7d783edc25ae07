"""Long documents: full length vs ``max_tokens_per_doc=512`` vs ``long_documents="chunk"`` (512-token windows),
docs/s and peak memory side by side, with the cost model that explains each figure.

Models (``--size``):
  real   random checkpoints (``vlrank.synthetic``) at the real widths: Qwen3-Reranker-0.6B (text hidden 1024,
         28 layers, 16 / 8 heads, head_dim 128, FFN 3072) and Qwen3-VL-Reranker-2B (hidden 2048, 28 layers, 16 / 8
         heads, FFN 6144; vision 1024 wide, 24 blocks) with one 512x512 image per document; the real tokenizer.
         ``--layers N`` cuts the depth (costs scale linearly with it; the table says which depth ran).
  tiny   the golden tiny checkpoints (a smoke run of the script: numbers say nothing about real models).

20 documents of ~6,000 tokens each (``--docs`` / ``--doc-tokens``) against one query, one ``rerank`` call per
mode. Each mode runs in its own process: the resident high-water mark is reset once the model is loaded and a
short call has made every weight page resident, then read after the timed call (the call's own peak).

Cost model (decoder cost ~ tokens scored, attention ~ sum of squared row lengths):
  full     20 rows of min(6,000 + template, max_length) tokens
  cap512   20 rows of ~512 + template tokens
  chunk    20 x ceil((6,000 - 512) / 448 + 1) = 20 x 14 windows of ~512 + template tokens (overlap 64)
The table prints the measured tokens (usage) and windows beside the seconds, so the ratio between modes can be
checked against tokens and rows.

    python benches/bench_long_documents.py [--size tiny|real] [--docs 20] [--doc-tokens 6000] [--layers 28]
        [--workdir /tmp/vlrank-longdocs] [--no-write] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import benchlib

QUERY = "What does the report say about the water supply of the northern districts?"
WORDS = ("the city council report water supply district river pump station winter summer rainfall "
         "reservoir pipe network pressure repair budget engineer survey household demand forecast").split()
MODES = {
    "full": {},
    "cap512": {"max_tokens_per_doc": 512},
    "chunk512": {"long_documents": "chunk", "chunk_tokens": 512, "max_chunks_per_doc": 64},
}
GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "models"


def prepare_models(args) -> dict[str, Path]:
    """{"text": export, "vl": export} under ``--workdir`` (built once, reused)."""
    from vlrank.export import export

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.size == "tiny":
        sources = {"text": GOLDEN / "tiny-qwen3-text", "vl": GOLDEN / "tiny-qwen3-vl"}
    else:
        from vlrank.synthetic import TextShape, VisionShape, write_random_qwen3, write_random_qwen3_vl

        sources = {"text": work / f"ckpt-text-{args.layers}", "vl": work / f"ckpt-vl-{args.layers}"}
        tok = benchlib.tokenizer_json()
        if not (sources["text"] / "model.safetensors").is_file():
            write_random_qwen3(sources["text"], shape=TextShape(hidden=1024, layers=args.layers, heads=16, kv_heads=8,
                                                                head_dim=128, intermediate=3072), tokenizer_json=tok)
        if not (sources["vl"] / "model.safetensors").is_file():
            write_random_qwen3_vl(sources["vl"], text=TextShape(hidden=2048, layers=args.layers, heads=16, kv_heads=8,
                                                                head_dim=128, intermediate=6144),
                                  vision=VisionShape(hidden=1024, depth=min(args.layers, 24), heads=16,
                                                     intermediate=4096, num_position_embeddings=2304,
                                                     deepstack_layers=(0,)), tokenizer_json=tok)
    out = {}
    for kind, src in sources.items():
        dest = work / f"export-{args.size}-{kind}-{args.layers}"
        if not (dest / "vlrank.json").is_file():
            benchlib.eprint(f"exporting {dest} ...")
            export(src, dest, task="rerank", progress=False)
        out[kind] = dest
    return out


def documents(model, *, n: int, tokens: int, image: str | None) -> list:
    """``n`` documents of ``tokens`` tokens of text (the model's tokenizer), each with ``image`` when given."""
    tok = model.runner.tokenizer
    docs = []
    for d in range(n):
        words = " ".join(WORDS[(i * 7 + d) % len(WORDS)] for i in range(tokens + 16))
        text = tok.decode(tok.encode(words)[:tokens])
        docs.append(text if image is None else {"content": [{"type": "text", "text": text},
                                                            {"type": "image_url", "image_url": {"url": image}}]})
    return docs


def one(args) -> None:
    """Child process: load, warm up, reset the high-water mark, time one call of ``--mode``, print JSON."""
    import vlrank

    model = vlrank.Reranker(args.model, max_length=args.max_length)
    image = None
    if args.image:
        import base64
        import io

        import numpy as np
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(buf, "PNG")
        image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    docs = documents(model, n=args.docs, tokens=args.doc_tokens, image=image)
    model.rerank(QUERY, docs[:1], max_tokens_per_doc=16)  # every weight page resident
    base = benchlib.reset_hwm()
    start = time.perf_counter()
    result = model.rerank(QUERY, docs, return_documents=False, **MODES[args.mode])
    seconds = time.perf_counter() - start
    windows = sum(r["chunk"]["count"] if "chunk" in r else 1 for r in result["results"])
    print(json.dumps({"seconds": seconds, "docs_per_s": args.docs / seconds, "peak_mib": benchlib.hwm_mib() - base,
                      "tokens": result["usage"]["prompt_tokens"], "windows": windows}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=["tiny", "real"], default="tiny")
    p.add_argument("--docs", type=int, default=20)
    p.add_argument("--doc-tokens", type=int, default=6000)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--max-length", type=int, default=8192, help="the rerankers' max_length (full mode reads it all)")
    p.add_argument("--workdir", default="/tmp/vlrank-longdocs")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--image", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        one(args)
        return 0
    models = prepare_models(args)
    info, load_start = benchlib.machine(), benchlib.load_average()
    rows, doc = [], {}
    for kind, path in models.items():
        for mode in MODES:
            cmd = [sys.executable, __file__, "--one", "--mode", mode, "--model", str(path), "--docs", str(args.docs),
                   "--doc-tokens", str(args.doc_tokens), "--max-length", str(args.max_length)]
            run = subprocess.run(cmd + (["--image"] if kind == "vl" else []), capture_output=True, text=True,
                                 timeout=3600)
            if run.returncode != 0:
                benchlib.eprint(run.stderr)
                return 1
            r = json.loads(run.stdout.strip().splitlines()[-1])
            doc[f"{kind}/{mode}"] = r
            rows.append(f"| {kind} | {mode} | {r['docs_per_s']:.2f} | {r['seconds']:.2f} s | {r['peak_mib']:.0f} MiB "
                        f"| {r['tokens']:,} | {r['windows']} |")
    depth = f"real widths, {args.layers} layers" if args.size == "real" else "tiny golden checkpoints: a smoke run only"
    md = "\n".join([
        "## Long documents (benches/bench_long_documents.py)", "",
        f"Models: {depth}; {args.docs} documents of {args.doc_tokens} tokens, max_length "
        f"{args.max_length}; VL: one 512x512 image per document. "
        + benchlib.machine_line(info, load_start, benchlib.load_average()), "",
        "| model | mode | docs/s | call | peak above loaded | tokens scored | rows (windows) |",
        "|---|---|---:|---:|---:|---:|---:|", *rows])
    return benchlib.finish(md, section="bench_long_documents", args=args, doc=doc)


if __name__ == "__main__":
    sys.exit(main())
