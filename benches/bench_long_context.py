"""One long pair at the real Qwen3-VL-2B widths: memory above the loaded model and seconds, vlrank vs the
transformers reference (float32, SDPA), CPU.

The checkpoint is random (``vlrank.synthetic``) with Qwen3-VL-2B's widths — text hidden 2048, 16 / 8
heads, head_dim 128, FFN 6144, M-RoPE [24, 20, 20], the real vocabulary; vision 1024 wide, 16 heads,
FFN 4096, DeepStack — and few layers (4 text, 4 vision) unless ``--full-depth`` (28 text, 24 vision:
the real 2B model, ~9 GB in float32). Cases: one text pair of each ``--lengths`` total prompt tokens,
and ``images``: one pair whose document holds ten 1024x1280 images (1,280 image tokens each) plus text.

Each case runs in its own process (for both stacks), which resets its RSS high-water mark (VmHWM in
/proc/self/status, reset by writing 5 to /proc/self/clear_refs) once the model is loaded and reads it
after one call of the long pair: the difference is the call's own peak memory. vlrank memory-maps its weights, so it scores a short pair first (every weight
page resident, as transformers' are after loading) before reading the loaded mark. Seconds are the one
long call. Prints a table and replaces the ``bench_long_context`` section
of benches/RESULTS.md (``--no-write`` to skip).

    python benches/bench_long_context.py [--lengths 1024,4096,8192] [--images] [--full-depth]
        [--engines vlrank,transformers] [--workdir /tmp/vlrank-longctx] [--reference-python /work/tfvenv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import benchlib
from vlrank.synthetic import TextShape, VisionShape, write_random_qwen3_vl

TFVENV = Path("/work/tfvenv/bin/python")
QUERY = "What does the report say about the water supply of the northern districts?"
WORDS = ("the city council report water supply district river pump station winter summer rainfall "
         "reservoir pipe network pressure repair budget engineer survey household demand forecast").split()


def shapes(full_depth: bool) -> tuple[TextShape, VisionShape]:
    text = TextShape(hidden=2048, layers=28 if full_depth else 4, heads=16, kv_heads=8, head_dim=128,
                     intermediate=6144)
    vision = VisionShape(hidden=1024, depth=24 if full_depth else 4, heads=16, intermediate=4096,
                         num_position_embeddings=2304, deepstack_layers=(5, 11, 17) if full_depth else (1, 2, 3))
    return text, vision


def prepare_model(workdir: Path, full_depth: bool) -> tuple[Path, Path]:
    """(checkpoint, export) under ``workdir``, built once and reused by later runs."""
    from vlrank.export import export

    tag = "full" if full_depth else "4layer"
    ckpt, out = workdir / f"ckpt-{tag}", workdir / f"export-{tag}"
    if not (ckpt / "model.safetensors").is_file():
        text, vision = shapes(full_depth)
        benchlib.eprint(f"writing the random checkpoint {ckpt} ...")
        write_random_qwen3_vl(ckpt, text=text, vision=vision, tokenizer_json=benchlib.tokenizer_json())
    if not (out / "vlrank.json").is_file():
        benchlib.eprint(f"exporting {out} ...")
        export(ckpt, out, task="rerank", progress=False)
    return ckpt, out


def document_of(tokens: int, tokenizer_path: Path) -> str:
    """A text of about ``tokens`` tokens (the real tokenizer's count) from a fixed word cycle."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    words = " ".join(WORDS[(i * 7) % len(WORDS)] for i in range(tokens + 16))
    return tok.decode(tok.encode(words, add_special_tokens=False).ids[:tokens])


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` noisy 1024x1280 PNGs (1,280 image tokens each at the default pixel budget)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        if not path.is_file():
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 256, (1280, 1024, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# Runs in a fresh interpreter: load, read VmHWM, one call, read VmHWM again.
_VLRANK_CASE = r"""
import json, sys, time
import vlrank
spec = json.loads(open(sys.argv[1]).read())  # a file: a 32k-token document is over the argv limit
sys.path.insert(0, spec["benches"])
from benchlib import hwm_mib as hwm, reset_hwm, status_kib
def status(key):
    return status_kib(key) / 1024
kwargs = {"memory_budget": spec["memory_budget"]} if spec.get("memory_budget") else {}
rr = vlrank.Reranker(spec["model"], providers="cpu", max_length=spec["max_length"], **kwargs)
rr.rerank("warm up", ["a short pair"])  # pages the memory-mapped weights in: "loaded" means resident
loaded, file_loaded = reset_hwm(), status("RssFile")  # VmHWM := current RSS (loading's peak forgotten)
query = spec["query"]
docs = [{"content": [*({"type": "image_url", "image_url": {"url": "file://" + p}} for p in spec["images"]),
                     {"type": "text", "text": spec["document"]}]}] if spec["images"] else [spec["document"]]
t = time.perf_counter()
try:
    out = rr.rerank(query, docs)
except vlrank.VlrankError as exc:
    print(json.dumps({"refused": f"{type(exc).__name__}: {exc}", "hwm_loaded_mb": loaded}))
    sys.exit(0)
seconds = time.perf_counter() - t
from PIL import Image
sizes = [Image.open(p).size for p in spec["images"]]
image_tokens = [vlrank.image_tokens(height=h, width=w) for w, h in sizes]
budget = rr.runner.budget
estimate = (budget.row_bytes(out["usage"]["prompt_tokens"], sum(image_tokens))
            + budget.vision_bytes(4 * max(image_tokens, default=0)))
print(json.dumps({"seconds": seconds, "hwm_loaded_mb": loaded, "hwm_peak_mb": hwm(),
                  "file_loaded_mb": file_loaded, "file_after_mb": status("RssFile"),
                  "tokens": out["usage"]["prompt_tokens"], "score": out["results"][0]["relevance_score"],
                  "memory_budget": rr.runner.memory_budget, "estimate_mb": estimate / 2**20}))
"""


def run_vlrank(model: Path, *, document: str, images: list[Path], max_length: int, threads: int,
               memory_budget: int | None) -> dict:
    spec = {"model": str(model), "query": QUERY, "document": document, "images": [str(p) for p in images],
            "max_length": max_length, "memory_budget": memory_budget, "benches": str(benchlib.BENCHES)}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with benchlib.json_file(spec) as path:
        proc = subprocess.run([sys.executable, "-c", _VLRANK_CASE, path], capture_output=True, text=True,
                              env=env, timeout=7200)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_transformers(python: Path, ckpt: Path, *, document: str, images: list[Path], threads: int) -> dict:
    spec = {"query": {"texts": [QUERY]}, "documents": [{"texts": [document], "images": [str(p) for p in images]}],
            "instruction": None, "repeats": 1, "warmup": False}
    try:
        out = benchlib.run_reference(python, "vl-rerank", ckpt, spec, mode="loop", threads=threads)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        text = str(exc).strip().splitlines()
        return {"error": text[-1] if text else type(exc).__name__}
    return {"seconds": out["seconds"][0], "hwm_loaded_mb": out["hwm_loaded_mb"], "hwm_peak_mb": out["hwm_peak_mb"],
            "score": out["scores"][0]}


def extra_gb(result: dict | None) -> str:
    if not result:
        return "–"
    if "refused" in result:
        return "refused (budget)" if result["refused"].startswith("MemoryBudgetError") else "error"
    if "error" in result:
        return "failed"
    return f"{(result['hwm_peak_mb'] - result['hwm_loaded_mb']) / 1024:.2f} GB"


def paged_gb(result: dict | None) -> str:
    """Growth of vlrank's file-backed RSS over the call: memory-mapped weight pages the kernel had dropped
    (under memory pressure) between the warm-up and the call and that the call read back in. They are part
    of the RSS high-water mark but not the call's working memory."""
    if not result or "file_after_mb" not in result:
        return "–"
    return f"{max(0.0, result['file_after_mb'] - result['file_loaded_mb']) / 1024:.2f} GB"


def secs(result: dict | None) -> str:
    return f"{result['seconds']:.1f} s" if result and "seconds" in result else "–"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="1024,4096,8192", help="comma-separated total prompt tokens ('' for none)")
    ap.add_argument("--images", action="store_true", help="also the ten-image pair")
    ap.add_argument("--full-depth", action="store_true", help="28 text / 24 vision layers (the real 2B depth)")
    ap.add_argument("--engines", default="vlrank,transformers")
    ap.add_argument("--workdir", default="/tmp/vlrank-longctx")
    ap.add_argument("--reference-python", default=str(TFVENV) if TFVENV.exists() else None)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--memory-budget", type=int, default=None, help="bytes; default: vlrank's own default")
    ap.add_argument("--section", default=None,
                    help="RESULTS.md section to replace (default bench_long_context, _full with --full-depth)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    engines = set(args.engines.split(","))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    info, load_start = benchlib.machine(), benchlib.load_average()
    ckpt, model = prepare_model(workdir, args.full_depth)
    cases: list[tuple[str, str, list[Path], int]] = []
    overhead = 80  # system prompt, instruction, query and chat markup of the VL rerank prompt
    for n in [int(x) for x in args.lengths.split(",") if x.strip()]:
        cases.append((f"{n // 1024}k tokens", document_of(n - overhead, ckpt / "tokenizer.json"), [], n + 256))
    if args.images:
        cases.append(("10 images x 1,280 tokens + text", document_of(200, ckpt / "tokenizer.json"),
                      make_images(workdir / "images", 10), 16384))
    rows = []
    for label, document, images, max_length in cases:
        ours = theirs = None
        if "vlrank" in engines:
            benchlib.eprint(f"{label}: vlrank ...")
            ours = run_vlrank(model, document=document, images=images, max_length=min(max_length, 32768),
                              threads=args.threads, memory_budget=args.memory_budget)
            benchlib.eprint(f"  {ours}")
        if "transformers" in engines and args.reference_python:
            benchlib.eprint(f"{label}: transformers ...")
            theirs = run_transformers(Path(args.reference_python), ckpt, document=document, images=images,
                                      threads=args.threads)
            benchlib.eprint(f"  {theirs}")
        rows.append((label, ours, theirs))
    depth = "28 text / 24 vision layers" if args.full_depth else "4 text / 4 vision layers"
    lines = [
        "## bench_long_context: one long pair at Qwen3-VL-2B widths (CPU, float32)",
        "",
        f"Random checkpoint with the real 2B widths, {depth}; one call of the long pair per case, each in its own "
        "process. "
        "Extra memory = RSS high-water mark after the call minus after loading (vlrank: after a short warm-up "
        "pair, so its memory-mapped weights are resident). transformers: "
        "benches/reference_transformers.py (SDPA, float32). vlrank's own estimate of the call (its memory "
        "budget's per-row figure) is shown beside the measurement. \"Of which weight pages read back\": the growth "
        "of vlrank's file-backed RSS over the call — memory-mapped weight pages the kernel dropped under memory "
        "pressure before the call and the call read again; they are inside the extra-memory figure but are not "
        "the call's working memory.",
        "",
        "| one pair of | tokens | vlrank extra memory | of which weight pages read back | vlrank estimate | transformers "
        "| vlrank time | transformers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, ours, theirs in rows:
        tokens = ours.get("tokens", "–") if ours else "–"
        estimate = f"{ours['estimate_mb'] / 1024:.2f} GB" if ours and "estimate_mb" in ours else "–"
        lines.append(f"| {label} | {tokens} | {extra_gb(ours)} | {paged_gb(ours)} | {estimate} | {extra_gb(theirs)} | "
                     f"{secs(ours)} | {secs(theirs)} |")
    lines += ["", benchlib.machine_line(info, load_start, benchlib.load_average()),
              f"Run: `python benches/bench_long_context.py --lengths {args.lengths}"
              f"{' --images' if args.images else ''}{' --full-depth' if args.full_depth else ''}"
              f" --engines {args.engines}{' --section ' + args.section if args.section else ''}`"
              f" ({time.strftime('%Y-%m-%d')})."]
    table = "\n".join(lines)
    benchlib.finish(table, section=args.section or ("bench_long_context" + ("_full" if args.full_depth else "")),
                    args=args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
