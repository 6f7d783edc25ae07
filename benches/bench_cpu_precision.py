"""CPU precision side by side: vlrank float32 / int8 weight-only / int8 compute / int4 + int8 compute against
llama.cpp F32 / Q8_0 / Q4_K_M on the same synthetic Qwen3-Reranker checkpoint and the same prompt tokens.

Model: a random ``Qwen3ForCausalLM`` checkpoint at Qwen3-Reranker-0.6B's widths (hidden 1024, 16 / 8 heads,
head_dim 128, FFN 3072, the real 151,936-token vocabulary and tokenizer), ``--layers`` deep (28 = full depth).
It is exported by vlrank once per configuration and converted by llama.cpp's own ``convert_hf_to_gguf.py`` (run
by the bench venv, ``--llama-python``) to GGUF F32, then quantized by llama.cpp to Q8_0 and Q4_K_M.

Workload: ``--docs`` documents of ``--doc-tokens`` tokens against one query, on ``--threads`` threads. vlrank's
prompt builder makes the prompt ids once; llama.cpp (benches/llama_rank.py, rank pooling: the yes/no head and the
softmax the converter attaches to a Qwen3 reranker) scores exactly those ids, one sequence per decode.
Every configuration runs in its own process, ``--repeats`` rounds interleaved (each round runs every
configuration once, alternate rounds in reverse order); docs/s is the best round's, peak RSS the process's
resident high-water mark during the timed call (reset after a warm-up call; weights included).
|Δscore| and Spearman are against vlrank float32 on the same documents.

``--vl-layers N`` adds a second table: a random Qwen3-VL checkpoint at Qwen3-VL-Reranker-2B's widths (N decoder and
min(N, 24) vision blocks), ``--vl-docs`` image documents (448x448), float32 against int8 compute.

Configurations this tree cannot export (int8 compute before it lands) print as "not available in this tree";
with no bench venv the llama.cpp rows say why.

    python benches/bench_cpu_precision.py [--layers 28] [--docs 32] [--doc-tokens 300] [--threads 2]
        [--repeats 2] [--vl-layers 0] [--vl-docs 16] [--workdir /tmp/vlrank-cpu-precision]
        [--llama-python /work/bench-llama/bin/python] [--no-write] [--json]
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

# (label, vlrank.export keyword arguments); int8 compute is `precision="int8"` on top of a quantized export.
VLRANK = [
    ("vlrank float32", {}),
    ("vlrank int8 weight-only", {"quantize": "int8"}),
    ("vlrank int8 weight-only, acc. level 4", {"quantize": "int8", "accuracy_level": 4}),
    ("vlrank int8 compute", {"quantize": "int8", "precision": "int8"}),
    ("vlrank int4 + int8 compute", {"quantize": "int4", "precision": "int8"}),
]
LLAMA = [("llama.cpp F32", "f32"), ("llama.cpp Q8_0", "q8_0"), ("llama.cpp Q4_K_M", "q4_k_m")]
VL = [("vlrank float32", {}), ("vlrank int8 compute", {"quantize": "int8", "precision": "int8"})]
DEFAULT_LLAMA_PYTHON = Path("/work/bench-llama/bin/python")
LLAMA_SRC = Path("/work/bench-llama/src")
HERE = Path(__file__).resolve().parent


# ---- models ------------------------------------------------------------------------------------------------
def text_checkpoint(work: Path, layers: int) -> Path:
    """The synthetic Qwen3-Reranker-0.6B-wide checkpoint. Its folder name carries "qwen3-reranker": that is how
    convert_hf_to_gguf.py recognises a Qwen3 reranker (README title, folder name or config name)."""
    from vlrank.synthetic import TextShape, write_random_qwen3

    ckpt = work / f"qwen3-reranker-0.6b-synthetic-{layers}l"
    if not (ckpt / "model.safetensors").is_file():
        write_random_qwen3(ckpt, shape=TextShape(hidden=1024, layers=layers, heads=16, kv_heads=8, head_dim=128,
                                                 intermediate=3072), tokenizer_json=benchlib.tokenizer_json())
    return ckpt


def vl_checkpoint(work: Path, layers: int) -> Path:
    from vlrank.synthetic import TextShape, VisionShape, write_random_qwen3_vl

    ckpt = work / f"qwen3-vl-reranker-2b-synthetic-{layers}l"
    if not (ckpt / "model.safetensors").is_file():
        write_random_qwen3_vl(ckpt, text=TextShape(hidden=2048, layers=layers, heads=16, kv_heads=8, head_dim=128,
                                                   intermediate=6144),
                              vision=VisionShape(hidden=1024, depth=min(layers, 24), heads=16, intermediate=4096,
                                                 num_position_embeddings=2304, deepstack_layers=(0,)),
                              tokenizer_json=benchlib.tokenizer_json())
    return ckpt


def vlrank_export(ckpt: Path, dest: Path, opts: dict) -> Path | str:
    """The export (built once), or why this tree cannot build it."""
    import vlrank
    from vlrank.errors import VlrankError

    if (dest / "vlrank.json").is_file():
        return dest
    benchlib.eprint(f"exporting {dest.name} ...")
    try:
        vlrank.export(ckpt, dest, task="rerank", progress=False, **opts)
    except (VlrankError, TypeError) as exc:  # TypeError: a keyword this tree's export does not take
        return f"not available in this tree ({type(exc).__name__}: {str(exc).split(';')[0]})"
    return dest


def gguf_models(ckpt: Path, work: Path, python: Path | None, threads: int) -> dict[str, Path | str]:
    """{"f32" | "q8_0" | "q4_k_m": GGUF path, or why there is none}, built once with llama.cpp's own tools."""
    if python is None:
        return {t: "no llama.cpp bench venv (--llama-python; see docs/notes.md)" for _, t in LLAMA}
    converters = sorted(LLAMA_SRC.glob("llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    f32 = work / f"{ckpt.name}-f32.gguf"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if not f32.is_file():
        if not converters:
            return {t: f"no convert_hf_to_gguf.py under {LLAMA_SRC}" for _, t in LLAMA}
        benchlib.eprint(f"converting {ckpt.name} to GGUF F32 ...")
        run = subprocess.run([str(python), str(converters[-1]), str(ckpt), "--outtype", "f32", "--outfile", str(f32)],
                             capture_output=True, text=True, env=env, timeout=3600)
        if run.returncode != 0:
            why = (run.stderr.strip().splitlines() or ["?"])[-1]
            return {t: f"convert_hf_to_gguf.py failed: {why}" for _, t in LLAMA}
    out: dict[str, Path | str] = {"f32": f32}
    for _, kind in LLAMA[1:]:
        dst = work / f"{ckpt.name}-{kind}.gguf"
        if not dst.is_file():
            benchlib.eprint(f"quantizing to {kind} ...")
            run = subprocess.run([str(python), str(HERE / "llama_rank.py"), "quantize", "--src", str(f32), "--dst",
                                  str(dst), "--type", kind, "--threads", str(threads)],
                                 capture_output=True, text=True, env=env, timeout=3600)
            if run.returncode != 0:
                out[kind] = f"llama_model_quantize failed: {(run.stderr.strip().splitlines() or ['?'])[-1]}"
                continue
        out[kind] = dst
    return out


def slug(label: str) -> str:
    return label.removeprefix("vlrank ").replace(" ", "_").replace(",", "").replace(".", "")


def place(label: str, got: Path | str, targets: dict[str, Path], missing: dict[str, str]) -> None:
    """A built model goes to ``targets``, the reason there is none to ``missing``."""
    if isinstance(got, Path):
        targets[label] = got
    else:
        missing[label] = got


def size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


# ---- children ----------------------------------------------------------------------------------------------
def prep_child(model: str, spec_path: str, docs: int, doc_tokens: int) -> None:
    """The text workload: documents, vlrank's prompt ids of each pair and their text, written to ``spec_path``."""
    import vlrank
    from bench_long_documents import QUERY, documents

    rr = vlrank.Reranker(model, providers="cpu")
    texts = documents(rr, n=docs, tokens=doc_tokens, image=None)
    rows = rr.prepare(query=QUERY, documents=texts).rows
    tok = rr.runner.tokenizer
    spec = {"query": QUERY, "documents": texts, "ids": [r.ids for r in rows],
            "texts": [tok.decode(r.ids) for r in rows]}
    Path(spec_path).write_text(json.dumps(spec))


def vlrank_child(model: str, spec_path: str, threads: int) -> None:
    """One vlrank configuration in a fresh process: warm-up, reset the high-water mark, the timed call."""
    import vlrank

    spec = json.loads(Path(spec_path).read_text())
    rr = vlrank.Reranker(model, providers="cpu")
    benchlib.pin_threads(rr, threads)
    docs = spec["documents"]
    rr.rerank(spec["query"], docs[:1], return_documents=False)  # weights resident, arena grown, tower warm
    base = benchlib.reset_hwm()
    t = time.perf_counter()
    res = rr.rerank(spec["query"], docs, return_documents=False)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "tokens": res["usage"]["prompt_tokens"], "rss_before_mib": base,
                      "scores": benchlib.scores_in_order(res, len(docs)), "peak_rss_mib": benchlib.hwm_mib()}))


def _run(cmd: list[str], *, what: str, threads: int, clean_path: bool = False) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if clean_path:
        env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_one(label: str, target: Path, spec: Path, args) -> dict:
    if target.suffix == ".gguf":
        cmd = [str(args.llama_python), str(HERE / "llama_rank.py"), "rank", "--model", str(target), "--spec",
               str(spec), "--threads", str(args.threads)]
        return _run(cmd, what=label, threads=args.threads, clean_path=True)
    cmd = [sys.executable, __file__, "--child", "run", "--model", str(target), "--spec", str(spec),
           "--threads", str(args.threads)]
    return _run(cmd, what=label, threads=args.threads)


def rounds(targets: dict[str, Path], spec: Path, args) -> dict[str, dict]:
    """Every target once per round, ``args.repeats`` rounds, alternate rounds reversed (drift spreads evenly)."""
    runs: dict[str, list[dict]] = {k: [] for k in targets}
    for r in range(args.repeats):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for label in order:
            got = run_one(label, targets[label], spec, args)
            benchlib.eprint(f"round {r + 1}: {label}: {got['seconds']:.2f} s")
            runs[label].append(got)
    out = {}
    for label, got in runs.items():
        best = min(got, key=lambda g: g["seconds"])
        out[label] = {**got[0], "seconds": best["seconds"], "all_seconds": [g["seconds"] for g in got],
                      "peak_rss_mib": max(g["peak_rss_mib"] for g in got)}
    return out


# ---- comparison --------------------------------------------------------------------------------------------
def spearman(a: list[float], b: list[float]) -> float:
    import numpy as np

    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def table(results: dict[str, dict], missing: dict[str, str], sizes: dict[str, float], docs: int) -> list[str]:
    import numpy as np

    ref = results.get("vlrank float32", {}).get("scores")
    lines = ["| stack / weights | on disk MiB | docs/s | tokens/s | peak RSS MiB | \\|Δscore\\| vs vlrank float32 "
             "max / median | Spearman | seconds (rounds) |", "|---|---:|---:|---:|---:|---|---:|---|"]
    for label in [*sizes, *missing]:
        if label in missing:
            lines.append(f"| {label} | {missing[label]} | | | | | | |")
            continue
        r = results[label]
        delta, rho = "n/a (no score: last pooling)", "n/a"
        if ref is not None and r.get("scores") is not None:
            d = np.abs(np.asarray(r["scores"]) - np.asarray(ref))
            delta, rho = f"{d.max():.1e} / {float(np.median(d)):.1e}", f"{spearman(r['scores'], ref):.4f}"
        rounds_s = ", ".join(f"{s:.2f}" for s in r["all_seconds"])
        lines.append(f"| {label} | {sizes[label]:.0f} | {docs / r['seconds']:.3f} | {r['tokens'] / r['seconds']:.0f} "
                     f"| {r['peak_rss_mib']:.0f} | {delta} | {rho} | {rounds_s} |")
    return lines


def text_section(args, work: Path) -> tuple[list[str], dict]:
    ckpt = text_checkpoint(work, args.layers)
    targets: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for label, opts in VLRANK:
        place(label, vlrank_export(ckpt, work / f"export-{args.layers}l-{slug(label)}", opts), targets, missing)
    if "vlrank float32" not in targets:
        raise RuntimeError(f"the float32 export failed: {missing['vlrank float32']}")
    ggufs = gguf_models(ckpt, work, args.llama_python, args.threads)
    for label, kind in LLAMA:
        place(label, ggufs[kind], targets, missing)
    spec = work / f"spec-{args.layers}l-{args.docs}x{args.doc_tokens}.json"
    if not spec.is_file():
        subprocess.run([sys.executable, __file__, "--child", "prep", "--model", str(targets["vlrank float32"]),
                        "--spec", str(spec), "--docs", str(args.docs), "--doc-tokens", str(args.doc_tokens)],
                       check=True, timeout=3600)
    results = rounds(targets, spec, args)
    sizes = {label: size_mib(p) for label, p in targets.items()}
    lines = table(results, missing, sizes, args.docs)
    notes = []
    llama_f32 = results.get("llama.cpp F32")
    if llama_f32 is not None:
        mism = llama_f32.get("tokenizer_mismatches")
        notes.append(f"llama.cpp: llama-cpp-python {llama_f32['llama_cpp_python']}, pooling "
                     f"`{llama_f32['pooling']}` (n_cls_out {llama_f32['n_cls_out']}), float32 K/V cache; both stacks "
                     f"scored the same {llama_f32['tokens']:,} prompt tokens (vlrank's ids); llama.cpp's own "
                     f"tokenizer on the prompt text differs on {mism} of {args.docs} prompts.")
    tokens = results["vlrank float32"]["tokens"]
    head = (f"Qwen3-Reranker-0.6B widths, {args.layers} layers (random weights), {args.docs} documents, "
            f"{tokens / args.docs:.0f} prompt tokens each on average, {args.threads} threads, best of "
            f"{args.repeats} interleaved rounds (each configuration in its own process).")
    return [head, "", *lines, "", *notes], {"text": results, "missing": missing}


def vl_section(args, work: Path) -> tuple[list[str], dict]:
    from bench_quantized import _images

    ckpt = vl_checkpoint(work, args.vl_layers)
    targets: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for label, opts in VL:
        place(label, vlrank_export(ckpt, work / f"vl-export-{args.vl_layers}l-{slug(label)}", opts), targets, missing)
    query = "which picture shows the river crossing the capital"
    docs = [{"content": [{"type": "image_url", "image_url": {"url": p.resolve().as_uri()}}]}
            for p in _images(work / "images", args.vl_docs)]
    spec = work / f"vl-spec-{args.vl_docs}.json"
    spec.write_text(json.dumps({"query": query, "documents": docs}))
    results = rounds(targets, spec, args)
    sizes = {label: size_mib(p) for label, p in targets.items()}
    head = (f"Qwen3-VL-Reranker-2B widths, {args.vl_layers} decoder + {min(args.vl_layers, 24)} vision layers "
            f"(random weights), {args.vl_docs} image documents (448x448), {args.threads} threads.")
    return [head, "", *table(results, missing, sizes, args.vl_docs)], {"vl": results, "vl_missing": missing}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--docs", type=int, default=32)
    p.add_argument("--doc-tokens", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--vl-layers", type=int, default=0, help="0: no Qwen3-VL-2B table")
    p.add_argument("--vl-docs", type=int, default=16)
    p.add_argument("--workdir", default="/tmp/vlrank-cpu-precision")
    p.add_argument("--llama-python", default=None, help=f"the bench venv's Python (default {DEFAULT_LLAMA_PYTHON})")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", choices=["prep", "run"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "prep":
        prep_child(args.model, args.spec, args.docs, args.doc_tokens)
        return 0
    if args.child == "run":
        vlrank_child(args.model, args.spec, args.threads)
        return 0
    python = Path(args.llama_python) if args.llama_python else DEFAULT_LLAMA_PYTHON
    args.llama_python = python if python.exists() else None
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    info, load_start = benchlib.machine(), benchlib.load_average()
    text, doc = text_section(args, work)
    vl: list[str] = []
    if args.vl_layers:
        vl, vl_doc = vl_section(args, work)
        doc.update(vl_doc)
    md = "\n".join(["## CPU precision: vlrank exports against llama.cpp (benches/bench_cpu_precision.py)", "",
                    benchlib.machine_line(info, load_start, benchlib.load_average()), "", *text,
                    *(["", *vl] if vl else [])])
    return benchlib.finish(md, section="bench_cpu_precision", args=args, doc=doc)


if __name__ == "__main__":
    sys.exit(main())
