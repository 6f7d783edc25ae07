"""int8 / int4 weight-only quantized exports (``--quantize``) against float32: accuracy, size, memory, speed.

Two models, each exported to float32 and to int8 / int4 at MatMulNBits accuracy levels 0 (float32 compute)
and 4 (int8 activations):

- ``golden``: the tiny golden checkpoints (../shared/golden): every golden case through the public
  Reranker / Embedder — max and median |Δscore| against the reference scores, min embedding cosine. This
  is what tests/test_quantized.py's tolerances rest on.
- ``wide``: a random Qwen3-VL checkpoint of Qwen3-VL-2B's full widths (text 2048 / 16·8 heads / FFN 6144,
  vision 1024 / 16 heads / FFN 4096, 2304 position rows, real 151,936 vocabulary) and only ``--layers``
  decoder / vision layers. Per export: size on disk, RSS after loading (its own subprocess), docs/s on
  ``--threads`` intra-op threads for 32 text documents of ~200 tokens and for 4 image documents (448x448),
  and against the float32 export: |Δscore| (median, p99, max) and Spearman / top-10 overlap of a
  100-document ranking, cosine of 16 embeddings (the embed export of the same checkpoint).

The weights are random Gaussians: real checkpoints have outlier channels that make int4 worse than here,
so the ``wide`` numbers bound the kernel and packing error, and the golden numbers are the tested ones.

    python benches/bench_quantized.py [--section golden|wide|all] [--layers 2] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np

GOLDEN = benchlib.REPO.parent / "shared" / "golden"
CONFIGS = [("float32", None, 0), ("int8", "int8", 0), ("int8", "int8", 4), ("int4", "int4", 0), ("int4", "int4", 4)]
WORDS = ("retrieval ranking model document query image vision language score relevant answer paris france "
         "capital river mountain engine quantized weight block scale graph tensor kernel memory speed "
         "the of and a to in is for on with as by at from").split()


def _label(scheme: str, level: int) -> str:
    return scheme if scheme == "float32" else f"{scheme} (acc {level})"


def _export(ckpt: Path, out: Path, task: str, quantize: str | None, level: int) -> tuple[Path, float]:
    import vlrank

    t = time.perf_counter()
    opts = {} if quantize is None else {"quantize": quantize, "accuracy_level": level}
    vlrank.export(ckpt, out, task=task, progress=False, **opts)
    return out, time.perf_counter() - t


def _dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 2**20


# ---- golden ----------------------------------------------------------------------------------------------
def _side(spec: dict) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": str(GOLDEN / p)}} for p in spec.get("images", [])]
    parts += [{"type": "text", "text": t} for t in spec.get("texts", [])]
    return {"content": parts}


def golden(workdir: Path) -> list[dict]:
    import vlrank

    cases = {n: json.loads((GOLDEN / "cases" / f"{n}.json").read_text()) for n in ("text_rerank", "vl_rerank", "vl_embed")}
    rows = []
    for scheme, quantize, level in CONFIGS:
        text = _export(GOLDEN / "models" / "tiny-qwen3-text", workdir / f"g-text-{scheme}-{level}", "rerank", quantize, level)[0]
        vl_rr = _export(GOLDEN / "models" / "tiny-qwen3-vl", workdir / f"g-vlr-{scheme}-{level}", "rerank", quantize, level)[0]
        vl_em = _export(GOLDEN / "models" / "tiny-qwen3-vl", workdir / f"g-vle-{scheme}-{level}", "embed", quantize, level)[0]
        deltas: dict[str, list[float]] = {"text_rerank": [], "vl_rerank": []}
        for name, model in (("text_rerank", text), ("vl_rerank", vl_rr)):
            for case in cases[name]:
                kw = {} if name == "text_rerank" else {"min_pixels": case["min_pixels"], "max_pixels": case["max_pixels"]}
                rr = vlrank.Reranker(model, max_length=case["max_length"], providers="cpu", **kw)
                if name == "text_rerank":
                    out = rr.rerank(case["query"], case["documents"], instruction=case["instruction"])
                else:
                    out = rr.rerank(_side(case["query"]), [_side(d) for d in case["documents"]],
                                    instruction=case["instruction"])
                got = {r["index"]: r["relevance_score"] for r in out["results"]}
                deltas[name] += [abs(got[i] - ref["score"]) for i, ref in enumerate(case["results"])]
        em = vlrank.Embedder(vl_em, providers="cpu")
        cosines = []
        for case in cases["vl_embed"]:
            vec = np.asarray(em.embed(_side(case["input"]), instruction=case["instruction"])["data"][0]["embedding"])
            ref = np.asarray(case["embedding"])
            cosines.append(float(vec @ ref / (np.linalg.norm(vec) * np.linalg.norm(ref))))
        rows.append({"config": _label(scheme, level),
                     **{f"{k}_max": max(v) for k, v in deltas.items()},
                     **{f"{k}_median": float(np.median(v)) for k, v in deltas.items()},
                     "n": {k: len(v) for k, v in deltas.items()} | {"vl_embed": len(cosines)},
                     "embed_min_cos": min(cosines)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ---- wide (2B-shaped) ------------------------------------------------------------------------------------
def _doc(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS, words))


def _images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        y, x = np.mgrid[0:448, 0:448].astype(np.float32)
        rgb = np.stack([127 + 100 * np.sin(rng.uniform(2, 8) * (x + y) / 448 + c) for c in range(3)], -1)
        path = folder / f"img{i}.png"
        Image.fromarray(np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def child(spec: dict) -> None:
    """One loaded model in a fresh process: RSS after load, then the timed workloads; JSON on stdout."""
    import vlrank

    def rss_mib() -> float:
        return benchlib.status_kib("VmRSS") / 1024

    base = rss_mib()
    rng = np.random.default_rng(0)
    out: dict = {}
    if spec["task"] == "embed":
        em = vlrank.Embedder(spec["model"], providers="cpu")
        benchlib.pin_threads(em, spec["threads"])
        texts = [_doc(rng, 60) for _ in range(16)]
        out["embeddings"] = [d["embedding"] for d in em.embed([{"content": [{"type": "text", "text": t}]}
                                                               for t in texts])["data"]]
        print(json.dumps(out))
        return
    rr = vlrank.Reranker(spec["model"], providers="cpu")
    benchlib.pin_threads(rr, spec["threads"])
    out["rss_load_mib"] = rss_mib() - base
    if spec["task"] == "rerank8b":
        query = "which document is about the capital of france and its river"
        docs = [_doc(rng, spec["words"]) for _ in range(spec["docs"])]
        t = time.perf_counter()
        res = rr.rerank(query, docs)
        out.update(text_seconds=time.perf_counter() - t, text_docs=len(docs),
                   text_tokens=res["usage"]["total_tokens"] / len(docs), rss_peak_mib=rss_mib() - base)
        print(json.dumps(out))
        return
    query = "which document is about the capital of france and its river"
    ranking = [_doc(rng, int(rng.integers(20, 60))) for _ in range(100)]
    res = rr.rerank(query, ranking)
    out["ranking"] = [0.0] * 100
    for r in res["results"]:
        out["ranking"][r["index"]] = r["relevance_score"]
    long_docs = [_doc(rng, 170) for _ in range(32)]
    rr.rerank(query, long_docs[:2])  # warm-up
    t = time.perf_counter()
    res = rr.rerank(query, long_docs)
    out["text_seconds"] = time.perf_counter() - t
    out["text_tokens"] = res["usage"]["total_tokens"] / len(long_docs)
    docs = [{"content": [{"type": "image_url", "image_url": {"url": p.resolve().as_uri()}}]}
            for p in _images(Path(spec["images"]), 4)]
    rr.rerank(query, docs[:1])  # warm-up (the tower)
    t = time.perf_counter()
    res = rr.rerank(query, docs)
    out["image_seconds"] = time.perf_counter() - t
    out["image_scores"] = [r["relevance_score"] for r in sorted(res["results"], key=lambda r: r["index"])]
    out["rss_peak_mib"] = rss_mib() - base
    print(json.dumps(out))


def _run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def wide(workdir: Path, layers: int, threads: int) -> list[dict]:
    from vlrank.synthetic import TextShape, VisionShape, write_random_qwen3_vl

    ckpt = workdir / f"wide-2b-{layers}l"
    if not (ckpt / "model.safetensors").is_file():
        write_random_qwen3_vl(ckpt, text=TextShape(hidden=2048, layers=layers, heads=16, kv_heads=8, head_dim=128,
                                                   intermediate=6144),
                              vision=VisionShape(hidden=1024, depth=layers, heads=16, intermediate=4096,
                                                 num_position_embeddings=2304, deepstack_layers=(0,)),
                              tokenizer_json=benchlib.tokenizer_json())
    rows, ref = [], None
    for scheme, quantize, level in CONFIGS:
        model, seconds = _export(ckpt, workdir / f"w-rr-{scheme}-{level}", "rerank", quantize, level)
        emb, _ = _export(ckpt, workdir / f"w-em-{scheme}-{level}", "embed", quantize, level)
        got = _run_child({"task": "rerank", "model": str(model), "threads": threads, "images": str(workdir / "img")})
        got["embeddings"] = _run_child({"task": "embed", "model": str(emb), "threads": threads})["embeddings"]
        row = {"config": _label(scheme, level), "export_s": seconds, "disk_mib": _dir_mib(model),
               "rss_load_mib": got["rss_load_mib"], "rss_peak_mib": got["rss_peak_mib"],
               "text_docs_s": 32 / got["text_seconds"], "text_tokens": got["text_tokens"],
               "image_docs_s": 4 / got["image_seconds"]}
        if ref is None:
            ref = got
        d = np.abs(np.asarray(got["ranking"]) - np.asarray(ref["ranking"]))
        top = lambda s: set(np.argsort(s)[::-1][:10].tolist())  # noqa: E731
        cos = [float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
               for a, b in zip(got["embeddings"], ref["embeddings"])]
        row.update({"d_median": float(np.median(d)), "d_p99": float(np.quantile(d, 0.99)), "d_max": float(d.max()),
                    "d_image_max": float(np.abs(np.asarray(got["image_scores"]) - ref["image_scores"]).max()),
                    "spearman": _spearman(got["ranking"], ref["ranking"]),
                    "top10": len(top(got["ranking"]) & top(ref["ranking"])), "cos_min": min(cos),
                    "ref_score_range": [float(min(ref["ranking"])), float(max(ref["ranking"]))]})
        rows.append(row)
        print(json.dumps(row), flush=True)
        for path in (model, emb):
            for f in path.iterdir():
                f.unlink()
            path.rmdir()
    return rows


# ---- kernel ---------------------------------------------------------------------------------------------
def kernel(threads: int, rounds: int = 7) -> list[dict]:
    """One Linear of the 2B decoder's MLP (256 tokens x 2048 -> 6144, and 6144 -> 2048) as MatMul (float32)
    and as MatMulNBits per config; the configs run interleaved, round after round, and each keeps its median,
    so a busy machine slows all of them alike."""
    import onnxruntime as ort

    from vlrank.export.graph import FLOAT, Graph
    from vlrank.export.quantize import Quantization, matmul_nbits

    rng = np.random.default_rng(0)
    rows = []
    for k, n in ((2048, 6144), (6144, 2048)):
        w = (rng.standard_normal((n, k), dtype=np.float32) * 0.02)
        x = rng.standard_normal((256, k), dtype=np.float32)
        sessions = {}
        for scheme, quantize, level in CONFIGS:
            g = Graph("k")
            a = g.input("x", FLOAT, ["M", k])
            y = g.matmul(a, g.initializer("w", np.ascontiguousarray(w.T))) if quantize is None else \
                matmul_nbits(g, a, "w", w, Quantization(quantize, 32, level))
            g.output(y, "y", FLOAT, ["M", n])
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sessions[_label(scheme, level)] = ort.InferenceSession(g.to_model().SerializeToString(), opts,
                                                                   providers=["CPUExecutionProvider"])
        times = {name: [] for name in sessions}
        ref = sessions["float32"].run(None, {"x": x})[0]
        errors = {name: float(np.abs(s.run(None, {"x": x})[0] - ref).max() / np.abs(ref).max())
                  for name, s in sessions.items()}
        for _ in range(rounds):
            for name, sess in sessions.items():
                t = time.perf_counter()
                sess.run(None, {"x": x})
                times[name].append(time.perf_counter() - t)
        base = float(np.median(times["float32"]))
        for name in sessions:
            med = float(np.median(times[name]))
            rows.append({"shape": f"256x{k} @ {k}x{n}", "config": name, "ms": med * 1e3, "speedup": base / med,
                         "rel_err": errors[name]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


# ---- the 8B shape ----------------------------------------------------------------------------------------
class _ShapeRecorder:
    """Stands in for synthetic._Weights: records (shape, kind, scale) instead of materialising tensors, so the
    8B checkpoint (16 GB of bf16) is generated tensor by tensor in row chunks while it is written."""

    def __init__(self, rng) -> None:
        self.rng = rng
        self.tensors: dict[str, tuple] = {}

    def normal(self, name: str, *shape: int, scale: float = 0.05) -> None:
        self.tensors[name] = (shape, "normal", scale)

    def norm(self, name: str, size: int) -> None:
        self.tensors[name] = ((size,), "norm", 0.1)

    def bias(self, name: str, size: int) -> None:
        self.tensors[name] = ((size,), "bias", 0.02)


def _write_streamed(path: Path, tensors: dict[str, tuple]) -> None:
    """The safetensors file of ``tensors`` (name -> (shape, kind, scale)), bf16. Each tensor is a window of
    a 64 MiB pool of Gaussian bf16 values at its kind and scale, starting at a random offset: the values
    keep the synthetic model's statistics while the 16 GB file is written at disk speed."""
    import struct

    from vlrank import synthetic

    rng = np.random.default_rng(0)
    pool_size = 1 << 25
    pools: dict[tuple, np.ndarray] = {}
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        n = int(np.prod(tensors[name][0])) * 2
        header[name] = {"dtype": "BF16", "shape": list(tensors[name][0]), "data_offsets": [offset, offset + n]}
        offset += n
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)) + encoded)
        for name in sorted(tensors):
            shape, kind, scale = tensors[name]
            if (kind, scale) not in pools:
                values = rng.standard_normal(pool_size, dtype=np.float32) * np.float32(scale)
                values += np.float32(1.0 if kind == "norm" else 0.0)
                bits = synthetic._to_bf16_bits(values)
                pools[(kind, scale)] = np.concatenate([bits, bits])
            pool, total = pools[(kind, scale)], int(np.prod(shape))
            for start in range(0, total, pool_size):
                at = int(rng.integers(0, pool_size))
                out.write(memoryview(pool[at : at + min(pool_size, total - start)]).cast("B"))


def _write_8b(ckpt: Path) -> None:
    from vlrank import synthetic
    from vlrank.synthetic import TextShape, VisionShape

    weights, writer = synthetic._Weights, synthetic.write_safetensors_bf16
    synthetic._Weights, synthetic.write_safetensors_bf16 = _ShapeRecorder, _write_streamed
    try:
        synthetic.write_random_qwen3_vl(
            ckpt, text=TextShape(hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128, intermediate=12288),
            vision=VisionShape(hidden=1152, depth=27, heads=16, intermediate=4304, num_position_embeddings=2304,
                               deepstack_layers=(8, 16, 24)), tokenizer_json=benchlib.tokenizer_json())
    finally:
        synthetic._Weights, synthetic.write_safetensors_bf16 = weights, writer


def export_child(spec: dict) -> None:
    """One export in a fresh process: seconds, peak RSS (VmHWM) and peak anonymous RSS (sampled)."""
    import threading

    import vlrank

    kib = benchlib.status_kib
    base, peak, done = kib("RssAnon"), [kib("RssAnon")], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], kib("RssAnon"))

    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    vlrank.export(spec["ckpt"], spec["out"], task="rerank", quantize=spec["quantize"], progress=False)
    done.set()
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mib": kib("VmHWM") / 1024,
                      "peak_anon_above_base_mib": (max(peak[0], kib("RssAnon")) - base) / 1024}))


def eight_b(workdir: Path, threads: int, docs: int, words: int) -> dict:
    ckpt = workdir / "qwen3-vl-8b-shape"
    if not (ckpt / "model.safetensors").is_file():
        t = time.perf_counter()
        _write_8b(ckpt)
        print(f"8B checkpoint written in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    out = workdir / "e8b-int4"
    proc = subprocess.run([sys.executable, __file__, "--export-child",
                           json.dumps({"ckpt": str(ckpt), "out": str(out), "quantize": "int4"})],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    row = {"export": json.loads(proc.stdout.strip().splitlines()[-1]), "ckpt_gib": _dir_mib(ckpt) / 1024,
           "disk_gib": _dir_mib(out) / 1024}
    print(json.dumps(row), flush=True)
    got = _run_child({"task": "rerank8b", "model": str(out), "threads": threads, "docs": docs, "words": words})
    row.update(got)
    print(json.dumps(row), flush=True)
    return row


# ---- report ----------------------------------------------------------------------------------------------
def _markdown(info: dict, load: tuple[float, float], golden_rows: list[dict], wide_rows: list[dict], layers: int,
              threads: int, kernel_rows: list[dict] = ()) -> str:
    lines = ["## Quantized exports: int8 / int4 MatMulNBits against float32 (bench_quantized.py)", "",
             benchlib.machine_line(info, *load), ""]
    if golden_rows:
        lines += ["Golden tiny models, every golden case through Reranker / Embedder, against the reference scores "
                  f"({golden_rows[0]['n']['text_rerank']} text-rerank, {golden_rows[0]['n']['vl_rerank']} VL-rerank "
                  f"scores incl. images, {golden_rows[0]['n']['vl_embed']} embeddings):", "",
                  "| export | text rerank max / median \\|Δscore\\| | VL rerank max / median \\|Δscore\\| | embed min cosine |",
                  "|---|---|---|---|"]
        for r in golden_rows:
            lines.append(f"| {r['config']} | {r['text_rerank_max']:.1e} / {r['text_rerank_median']:.1e} | "
                         f"{r['vl_rerank_max']:.1e} / {r['vl_rerank_median']:.1e} | {r['embed_min_cos']:.6f} |")
        lines.append("")
    if wide_rows:
        lines += [f"Qwen3-VL-2B widths, {layers} decoder + {layers} vision layers (random weights), {threads} intra-op "
                  f"threads. Text: 32 documents of ~{wide_rows[0]['text_tokens']:.0f} prompt tokens; images: 4 "
                  "documents of 448x448 (196 image tokens each). Δ against the float32 export: a 100-document "
                  "ranking (|Δscore| median / p99 / max, Spearman, top-10 overlap), the 4 image scores (max), 16 "
                  "embeddings (min cosine). RSS: after loading the reranker / after the workloads, above the "
                  "process baseline.", "",
                  "| export | disk MiB | RSS load / peak MiB | export s | text docs/s | image docs/s | \\|Δscore\\| "
                  "median / p99 / max | image \\|Δ\\| max | Spearman | top-10 | embed min cos |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in wide_rows:
            lines.append(f"| {r['config']} | {r['disk_mib']:.0f} | {r['rss_load_mib']:.0f} / {r['rss_peak_mib']:.0f} | "
                         f"{r['export_s']:.1f} | {r['text_docs_s']:.2f} | {r['image_docs_s']:.2f} | "
                         f"{r['d_median']:.1e} / {r['d_p99']:.1e} / {r['d_max']:.1e} | {r['d_image_max']:.1e} | "
                         f"{r['spearman']:.4f} | {r['top10']}/10 | {r['cos_min']:.5f} |")
        lo, hi = wide_rows[0]["ref_score_range"]
        lines += ["", f"float32 scores of the ranking span [{lo:.1e}, {hi:.6f}].", ""]
    if kernel_rows:
        lines += [f"One Linear of the 2B MLP, {threads} threads, configs interleaved over 7 rounds (median):", "",
                  "| shape | export | ms | speed vs float32 | max rel. error vs float32 |", "|---|---|---|---|---|"]
        lines += [f"| {r['shape']} | {r['config']} | {r['ms']:.1f} | {r['speedup']:.2f}x | {r['rel_err']:.1e} |"
                  for r in kernel_rows]
    return "\n".join(lines)


def _markdown_8b(info: dict, load: tuple[float, float], r: dict, threads: int) -> str:
    e = r["export"]
    return "\n".join([
        "## The Qwen3-VL-8B shape in int4 on this machine (bench_quantized.py --section 8b)", "",
        benchlib.machine_line(info, *load), "",
        "A random checkpoint of Qwen3-VL-8B's full widths and depth (text 4096, 36 layers, 32/8 heads, FFN 12288; "
        f"vision 27 x 1152, FFN 4304; {r['ckpt_gib']:.1f} GiB of bf16 safetensors) exported with `--quantize int4` "
        "(block 32, accuracy level 0) in its own process, then loaded as a Reranker in another.", "",
        "| export s | export peak RSS MiB | export peak heap above baseline MiB | int4 export on disk GiB | "
        f"RSS after load MiB | {r['text_docs']} text docs (~{r['text_tokens']:.0f} tokens) s | docs/s |",
        "|---|---|---|---|---|---|---|",
        f"| {e['seconds']:.0f} | {e['peak_rss_mib']:.0f} | {e['peak_anon_above_base_mib']:.0f} | {r['disk_gib']:.2f} | "
        f"{r['rss_load_mib']:.0f} | {r['text_seconds']:.1f} | {r['text_docs'] / r['text_seconds']:.3f} |", "",
        f"{threads} intra-op threads. float32 (transformers or a vlrank float32 export) needs ~33 GB for these "
        "weights alone (7.5 B Linear parameters x 4 bytes + the 151,936 x 4096 embedding table) and cannot load on "
        "this 24 GB machine."])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=["golden", "wide", "kernel", "all", "8b"], default="all",
                    help="all = golden + wide; 8b (alone: ~16 GB of disk, minutes) the 8B shape to int4")
    ap.add_argument("--docs-8b", type=int, default=16)
    ap.add_argument("--words-8b", type=int, default=60)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--export-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.export_child:
        export_child(json.loads(args.export_child))
        return 0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vlrank-bench-quant-"))
    workdir.mkdir(parents=True, exist_ok=True)
    info, load0 = benchlib.machine(), benchlib.load_average()
    if args.section == "8b":
        row = eight_b(workdir, args.threads, args.docs_8b, args.words_8b)
        text = _markdown_8b(info, (load0, benchlib.load_average()), row, args.threads)
        print(text)
        if not args.no_write:
            benchlib.write_section("bench_quantized_8b", text)
        return 0
    golden_rows = golden(workdir) if args.section in ("golden", "all") else []
    wide_rows = wide(workdir, args.layers, args.threads) if args.section in ("wide", "all") else []
    kernel_rows = kernel(args.threads) if args.section in ("kernel", "all") else []
    text = _markdown(info, (load0, benchlib.load_average()), golden_rows, wide_rows, args.layers, args.threads,
                     kernel_rows)
    return benchlib.finish(text, section="bench_quantized", args=args)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
