"""End-to-end CPU image reranking with Qwen3-VL-Reranker semantics: vlrank vs the transformers reference,
same random checkpoint, float32, same thread count.

A random Qwen3-VL checkpoint of the released layout (text: hidden 256, 4 layers, 8 heads / 4 KV,
head_dim 32, intermediate 768, real vocabulary and tokenizer; vision: hidden 256, depth 4, 4 heads,
DeepStack after blocks 0 and 2) in two scenarios:

1. ``image documents``: a text query against 16 image documents (generated JPEG/PNG of 448x448, 640x480
   and 1024x768: 196 / 300 / 768 image tokens at the default pixel budget);
2. ``shared query image``: a query holding one 1024x768 image (+ text) against 16 text documents. vlrank
   runs the vision tower once per call (checked with ``ImageBatch.tower_runs``); transformers encodes the
   query image once per pair (the official semantics: each pair is its own prompt).

transformers runs benches/reference_transformers.py (``loop``: one pair per forward, the official loop;
``batched``: all pairs in one left-padded forward, images through the tower together) in its own venv,
torch pinned to the same thread count. Scores are compared (max |Δ|). Prints a table and replaces the
``bench_vl_rerank`` section of benches/RESULTS.md.

    python benches/bench_vl_rerank.py [--quick] [--reference-python PATH] [--threads 2] [--no-write]
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
from vlrank.synthetic import TextShape, VisionShape, write_random_qwen3_vl

TEXT = TextShape(hidden=256, layers=4, heads=8, kv_heads=4, head_dim=32, intermediate=768)
VISION = VisionShape(hidden=256, depth=4, heads=4, intermediate=1024, num_position_embeddings=2304,
                     deepstack_layers=(0, 2))
# --real-width: Qwen3-VL-2B's widths (text 2048, 16 / 8 heads, head_dim 128, FFN 6144; vision 1024, 16
# heads, FFN 4096), 4 text and 4 vision layers.
REAL_TEXT = TextShape(hidden=2048, layers=4, heads=16, kv_heads=8, head_dim=128, intermediate=6144)
REAL_VISION = VisionShape(hidden=1024, depth=4, heads=16, intermediate=4096, num_position_embeddings=2304,
                          deepstack_layers=(1, 2, 3))
SIZES = ((448, 448, "jpg"), (640, 480, "png"), (1024, 768, "jpg"))  # (width, height, format)
TEXT_QUERY = "A photo of a red bicycle leaning against a stone wall"
IMAGE_QUERY_TEXT = "Find passages that describe this picture."
TEXT_DOCS = [
    "A red bicycle rests against an old stone wall in the afternoon sun.",
    "The quarterly report shows revenue growth across all regions.",
    "Mountains rise above the valley, their peaks covered with snow.",
    "A recipe for bread: flour, water, salt and a little yeast.",
    "The city council approved the new cycling lanes on Monday.",
    "Sea turtles return to the beach where they hatched to lay eggs.",
    "An introduction to linear algebra: vectors, matrices and spaces.",
    "The museum's new wing houses paintings from the eighteenth century.",
]


def make_images(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` images cycling through SIZES: smooth colour fields plus noise (compress like photos, not like
    flat colour), saved as JPEG / PNG."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h, fmt = SIZES[i % len(SIZES)]
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, 3)
        freq = rng.uniform(2, 8, 3)
        rgb = np.stack([127 + 100 * np.sin(freq[c] * (x / w + y / h) + phase[c]) for c in range(3)], axis=-1)
        rgb += rng.normal(0, 12, rgb.shape)
        path = folder / f"doc{i:02d}_{w}x{h}.{fmt}"
        img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        img.save(path, **({"quality": 90} if fmt == "jpg" else {}))
        paths.append(path)
    return paths


def image_part(path: Path) -> dict:
    return {"type": "image_url", "image_url": {"url": path.resolve().as_uri()}}


class TowerCounter:
    """Records the ImageBatch of every rerank call, so the bench can read its ``tower_runs``."""

    def __init__(self, rr) -> None:
        self.batches = []
        inner = rr._image_batch

        def wrapped():
            batch = inner()
            self.batches.append(batch)
            return batch

        rr._image_batch = wrapped


def time_vlrank(rr, counter: TowerCounter, query, docs, repeats: int) -> tuple[list[float], list[float], int]:
    """Seconds per call, scores in document order, and the most vision-tower runs of any one call."""
    counter.batches.clear()
    timing = benchlib.timed(lambda: rr.rerank(query, docs), repeats)
    runs = max(batch.tower_runs for batch in counter.batches)
    return timing.seconds, benchlib.scores_in_order(timing.result, len(docs)), runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 documents, 2 repeats, no RESULTS.md")
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--reference-repeats", type=int, default=2,
                    help="timed calls per reference mode (the official loop encodes the query image per pair)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of both stacks")
    ap.add_argument("--reference-python", default=None,
                    help="a Python with torch + transformers (default /work/refvenv/bin/python if present)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the checkpoint, images and export here")
    ap.add_argument("--real-width", action="store_true",
                    help="Qwen3-VL-2B widths, 4 layers (own RESULTS.md section bench_vl_rerank_real_width)")
    ap.add_argument("--no-write", action="store_true", help="do not touch benches/RESULTS.md")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.repeats, args.reference_repeats, args.no_write = 4, 2, 1, True
    if args.real_width:
        global TEXT, VISION
        TEXT, VISION = REAL_TEXT, REAL_VISION

    ref_python = benchlib.reference_or_note(args)
    info = benchlib.machine()
    load_start = benchlib.load_average()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vlrank-bench-vl-"))
    ckpt = work / ("Qwen3-VL-Reranker-random" + ("-real-width" if args.real_width else ""))
    if not (ckpt / "model.safetensors").is_file():
        write_random_qwen3_vl(ckpt, text=TEXT, vision=VISION, seed=0, tokenizer_json=benchlib.tokenizer_json())
    t0 = time.perf_counter()
    model_dir = vlrank.export(ckpt, work / f"exported-{ckpt.name}-float32", task="rerank", dtype="float32", progress=False)
    export_s = time.perf_counter() - t0
    images = make_images(work / "images", args.docs, seed=3)
    query_image = next(p for p in images if "1024x768" in p.name)

    rr = vlrank.Reranker(model_dir, providers="cpu")
    benchlib.pin_threads(rr, args.threads)
    counter = TowerCounter(rr)

    text_docs = [TEXT_DOCS[i % len(TEXT_DOCS)] + f" (passage {i})" for i in range(args.docs)]
    scenarios = [
        ("image documents", f"text query vs {args.docs} image documents",
         TEXT_QUERY, [{"content": [image_part(p)]} for p in images],
         {"texts": [TEXT_QUERY]}, [{"images": [str(p)]} for p in images]),
        ("shared query image", f"query image (1024x768) + text vs {args.docs} text documents",
         {"content": [image_part(query_image), {"type": "text", "text": IMAGE_QUERY_TEXT}]}, text_docs,
         {"images": [str(query_image)], "texts": [IMAGE_QUERY_TEXT]}, [{"texts": [d]} for d in text_docs]),
    ]

    sections, summary, versions = [], [], {}
    for key, title, v_query, v_docs, r_query, r_docs in scenarios:
        benchlib.eprint(f"{key}: vlrank ...")
        seconds, v_scores, runs = time_vlrank(rr, counter, v_query, v_docs, args.repeats)
        rows = [("vlrank (ONNX Runtime)", seconds, v_scores, runs)]
        if ref_python is not None:
            spec = {"query": r_query, "documents": r_docs, "instruction": None, "repeats": args.reference_repeats}
            n_images = sum(len(d.get("images", [])) + len(r_query.get("images", [])) for d in r_docs)
            for label, mode in (("transformers loop (official)", "loop"), ("transformers batched", "batched")):
                benchlib.eprint(f"{key}: reference {mode} ...")
                out = benchlib.run_reference(ref_python, "vl-rerank", ckpt, spec, mode=mode, threads=args.threads)
                rows.append((label, out["seconds"], out["scores"], n_images))
                versions = {"torch": out["torch"], "transformers": out["transformers"]}
            # The load drifts during the reference's minutes: time vlrank again after it.
            again, _, _ = time_vlrank(rr, counter, v_query, v_docs, args.repeats)
            rows.append(("vlrank again, after the reference runs", again, v_scores, runs))
        v_p50 = benchlib.p50(seconds)
        table = [f"**{title}**", "",
                 "| stack | docs/s | p50 per rerank call | best call | vlrank speed-up (p50 ratio) | max abs score diff vs vlrank "
                 "| vision tower runs per call |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for label, secs, scores, n_runs in rows:
            p = benchlib.p50(secs)
            diff = float(np.max(np.abs(np.asarray(scores) - np.asarray(v_scores))))
            table.append(f"| {label} | {len(v_docs) / p:,.2f} | {p * 1000:,.0f} ms | {min(secs) * 1000:,.0f} ms | {p / v_p50:.2f}x | "
                         f"{'—' if scores is v_scores else f'{diff:.1e}'} | {n_runs} |")
            summary.append({"scenario": key, "stack": label, "docs_per_s": round(len(v_docs) / p, 3),
                            "p50_s": round(p, 4), "speedup": round(p / v_p50, 3), "max_abs_diff": diff,
                            "tower_runs": n_runs, "seconds": secs})
        sections.append("\n".join(table))
        if key == "shared query image" and runs != 1:
            raise SystemExit(f"vlrank ran the vision tower {runs} times for one shared query image (expected 1)")
    load_end = benchlib.load_average()

    ref_versions = benchlib.versions_line(versions, ref_python)
    md = "\n".join([
        "## Image reranking, end to end on CPU (bench_vl_rerank.py)",
        "",
        f"Random Qwen3-VL (text hidden {TEXT.hidden}, {TEXT.layers} layers, {TEXT.heads} heads / {TEXT.kv_heads} KV, "
        f"head_dim {TEXT.head_dim}; vision hidden {VISION.hidden}, depth {VISION.depth}, {VISION.heads} heads, "
        f"DeepStack {list(VISION.deepstack_layers)}; real vocabulary and tokenizer); images "
        + ", ".join(f"{w}x{h} {fmt.upper()}" for w, h, fmt in SIZES)
        + f" (cycled); default pixel budget; float32 compute on both sides, {args.threads} intra-op threads on "
        f"both sides; p50 of {args.repeats} vlrank / {args.reference_repeats} reference calls after a warm-up "
        f"each; every call decodes and preprocesses its images (vlrank: Rust, transformers: PIL + the Qwen2-VL "
        f"image processor). vlrank export took {export_s:.1f} s.",
        "",
        *[s + "\n" for s in sections],
        "vlrank encodes each distinct image of a call once (`ImageBatch.tower_runs`, checked = 1 for the shared "
        "query image); the official semantics build each pair as its own prompt, so transformers encodes the "
        "query image once per pair. Score differences: float32 rounding plus Pillow vs vlrank resize rounding.",
        "",
        benchlib.machine_line(info, load_start, load_end) + ref_versions,
    ])
    return benchlib.finish(md, section="bench_vl_rerank" + ("_real_width" if args.real_width else ""), args=args,
                           doc={"bench": "vl_rerank", "rows": summary, "load": [load_start, load_end], **info})


if __name__ == "__main__":
    sys.exit(main())
