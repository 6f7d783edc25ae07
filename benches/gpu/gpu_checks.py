"""The GPU checks of benches/gpu/run.sh, one subcommand each; every one prints one JSON object.

    golden      the golden rerank cases (text and image) through vlrank.Reranker on --provider, for each
                --precisions export of the tiny golden checkpoints: max |Δscore| against the float32
                golden scores, which must be <= --tolerance (1e-2 for half precision; float32 keeps 1e-3)
    throughput  docs/s and p50 of one call of --docs text documents of ~--doc-tokens tokens, and of
                --image-docs image documents, on a 2B-shaped random checkpoint (--full-depth: 28 / 24
                layers), vlrank at --precision vs (with --reference-python) transformers bf16 + SDPA
    memory      one pair of --tokens tokens: device memory above the loaded model (GPU: nvidia-smi
                sampled during the call; CPU: the RSS high-water mark) and seconds
    prefix      the shared prompt prefix (issue 24): one call, a query image + question against --docs text
                documents of ~--doc-tokens tokens, share_prefix=False vs True on the same export: p50 of each
                and max |Δscore| between them, which must be <= --tolerance

``--provider cpu`` runs every check on ONNX Runtime's CPU EP with float32 exports (the script's own test,
tests/test_gpu_script.py, does this with tiny shapes); ``cuda`` requires CUDAExecutionProvider.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benches/: benchlib, bench_long_context

import benchlib  # noqa: E402
from bench_long_context import document_of, make_images  # noqa: E402

import vlrank  # noqa: E402
from vlrank.synthetic import TextShape, VisionShape, write_random_qwen3_vl  # noqa: E402

GOLDEN = benchlib.REPO.parent / "shared" / "golden"


def _providers(provider: str) -> str:
    if provider == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(f"no CUDAExecutionProvider in this onnxruntime ({ort.get_available_providers()}); "
                             "install onnxruntime-gpu on a CUDA machine, or pass --provider cpu")
    return provider


def _side(spec: dict) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": str(GOLDEN / p)}} for p in spec.get("images", [])]
    parts += [{"type": "text", "text": t} for t in spec.get("texts", [])]
    return {"content": parts}


def golden(args: argparse.Namespace) -> dict:
    providers = _providers(args.provider)
    cases = {"tiny-qwen3-text": json.loads((GOLDEN / "cases" / "text_rerank.json").read_text()),
             "tiny-qwen3-vl": json.loads((GOLDEN / "cases" / "vl_rerank.json").read_text())}
    work = Path(args.workdir) / "golden"
    report: dict = {"provider": args.provider, "tolerance": args.tolerance, "precisions": {}}
    ok = True
    for precision in args.precisions.split(","):
        worst, n = 0.0, 0
        for model, model_cases in cases.items():
            out = work / f"{model}-{precision}"
            if not (out / "vlrank.json").is_file():
                vlrank.export(GOLDEN / "models" / model, out, task="rerank", dtype=precision, precision=precision,
                              progress=False)
            for case in model_cases:
                kwargs = {"max_length": case["max_length"]}
                if "min_pixels" in case:
                    kwargs.update(min_pixels=case["min_pixels"], max_pixels=case["max_pixels"])
                rr = vlrank.Reranker(out, providers=providers, **kwargs)
                query = case["query"] if isinstance(case["query"], str) else _side(case["query"])
                docs = [d if isinstance(d, str) else _side(d) for d in case["documents"]]
                result = rr.rerank(query, docs, instruction=case["instruction"])
                scores = {r["index"]: r["relevance_score"] for r in result["results"]}
                for i, ref in enumerate(case["results"]):
                    worst = max(worst, abs(scores[i] - ref["score"]))
                    n += 1
        passed = worst <= args.tolerance
        ok &= passed
        report["precisions"][precision] = {"max_abs_delta": worst, "scores": n, "passed": passed}
    report["passed"] = ok
    return report


def checkpoint(workdir: Path, *, full_depth: bool, tiny: bool) -> Path:
    """A random 2B-shaped checkpoint (tiny: the test's small shapes), written once under ``workdir``."""
    if tiny:
        text = TextShape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128)
        vision = VisionShape(hidden=64, depth=2, heads=2, intermediate=128, num_position_embeddings=2304)
    else:
        text = TextShape(hidden=2048, layers=28 if full_depth else 4, heads=16, kv_heads=8, head_dim=128,
                         intermediate=6144)
        vision = VisionShape(hidden=1024, depth=24 if full_depth else 4, heads=16, intermediate=4096,
                             num_position_embeddings=2304,
                             deepstack_layers=(5, 11, 17) if full_depth else (1, 2, 3))
    tag = "tiny" if tiny else ("full" if full_depth else "4layer")
    ckpt = workdir / f"ckpt-{tag}"
    if not (ckpt / "model.safetensors").is_file():
        write_random_qwen3_vl(ckpt, text=text, vision=vision, tokenizer_json=benchlib.tokenizer_json())
    return ckpt


def exported_model(workdir: Path, ckpt: Path, precision: str) -> Path:
    out = workdir / f"{ckpt.name}-{precision}"
    if not (out / "vlrank.json").is_file():
        vlrank.export(ckpt, out, task="rerank", dtype=precision, precision=precision, progress=False)
    return out


def _timed_calls(fn, repeats: int) -> list[float]:
    fn()  # warm-up: sessions, arena, CUDA kernels
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def throughput(args: argparse.Namespace) -> dict:
    providers = _providers(args.provider)
    work = Path(args.workdir)
    ckpt = checkpoint(work, full_depth=args.full_depth, tiny=args.tiny)
    model = exported_model(work, ckpt, args.precision)
    query = "What does the report say about the water supply of the northern districts?"
    texts = [document_of(args.doc_tokens + (i % 7) * 10, ckpt / "tokenizer.json") for i in range(args.docs)]
    images = make_images(work / "images", min(args.image_docs, 10))
    image_docs = [{"content": [{"type": "image_url", "image_url": {"url": str(images[i % len(images)])}},
                               {"type": "text", "text": f"figure {i}"}]} for i in range(args.image_docs)]
    rr = vlrank.Reranker(model, providers=providers, max_pixels=args.max_pixels)
    out: dict = {"provider": args.provider, "precision": args.precision, "layers": rr.runner.manifest.dims.num_layers,
                 "docs": args.docs, "doc_tokens": args.doc_tokens, "image_docs": args.image_docs, "vlrank": {}}
    for name, docs in (("text", texts), ("images", image_docs)):
        if not docs:
            continue
        seconds = _timed_calls(lambda d=docs: rr.rerank(query, d), args.repeats)
        p50 = statistics.median(seconds)
        out["vlrank"][name] = {"p50_s": p50, "docs_per_s": len(docs) / p50,
                               "tokens": rr.rerank(query, docs[:1])["usage"]["prompt_tokens"]}
    if args.reference_python:
        spec = {"query": query, "texts": texts, "images": [str(images[i % len(images)]) for i in range(args.image_docs)],
                "repeats": args.repeats, "max_pixels": args.max_pixels, "device": args.provider}
        spec_path = work / "reference_spec.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run([args.reference_python, str(HERE / "reference_gpu.py"), "--checkpoint", str(ckpt),
                               "--spec", str(spec_path)], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            out["transformers"] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        else:
            out["transformers"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def prefix(args: argparse.Namespace) -> dict:
    providers = _providers(args.provider)
    work = Path(args.workdir)
    ckpt = checkpoint(work, full_depth=args.full_depth, tiny=args.tiny)
    model = exported_model(work, ckpt, args.precision)  # rerank exports take prefix K/V by default
    image = make_images(work / "images", 1)[0]
    query = {"content": [{"type": "image_url", "image_url": {"url": str(image)}},
                         {"type": "text", "text": "What does this figure show?"}]}
    docs = [document_of(args.doc_tokens + (i % 7) * 10, ckpt / "tokenizer.json") for i in range(args.docs)]
    out: dict = {"provider": args.provider, "precision": args.precision, "docs": args.docs,
                 "doc_tokens": args.doc_tokens, "tolerance": args.tolerance}
    scores = {}
    for mode, share in (("off", False), ("on", True)):
        rr = vlrank.Reranker(model, providers=providers, max_pixels=args.max_pixels, share_prefix=share)
        seconds = _timed_calls(lambda r=rr: r.rerank(query, docs), args.repeats)
        result = rr.rerank(query, docs)
        scores[mode] = {r["index"]: r["relevance_score"] for r in result["results"]}
        p50 = statistics.median(seconds)
        out[mode] = {"p50_s": p50, "docs_per_s": len(docs) / p50}
        out["tokens"] = result["usage"]["prompt_tokens"]
    delta = max(abs(scores["off"][i] - scores["on"][i]) for i in scores["off"])
    out.update(max_abs_delta=delta, speedup=out["off"]["p50_s"] / out["on"]["p50_s"], passed=delta <= args.tolerance)
    return out


class _GpuSampler:
    """The device's used memory (MiB, nvidia-smi) sampled every 50 ms on a thread; ``peak`` the largest."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def used() -> int:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i",
                              os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]],
                             capture_output=True, text=True, timeout=10)
        return int(out.stdout.strip().splitlines()[0])

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used())
            time.sleep(0.05)

    def __enter__(self) -> _GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.used())


def memory(args: argparse.Namespace) -> dict:
    providers = _providers(args.provider)
    work = Path(args.workdir)
    ckpt = checkpoint(work, full_depth=args.full_depth, tiny=args.tiny)
    model = exported_model(work, ckpt, args.precision)
    rr = vlrank.Reranker(model, providers=providers, max_length=min(32768, args.tokens + 256))
    rr.rerank("warm up", ["a short pair"])
    document = document_of(args.tokens - 80, ckpt / "tokenizer.json")
    query = "What does the report say about the water supply?"
    if args.provider == "cuda":
        before = _GpuSampler.used()
        with _GpuSampler() as sampler:
            start = time.perf_counter()
            result = rr.rerank(query, [document])
            seconds = time.perf_counter() - start
        extra_mb = sampler.peak - before
        kind = "gpu_mib_above_loaded"
    else:
        with open("/proc/self/clear_refs", "w") as fh:  # VmHWM := current RSS
            fh.write("5")
        before = benchlib.hwm_mib()
        start = time.perf_counter()
        result = rr.rerank(query, [document])
        seconds = time.perf_counter() - start
        extra_mb = benchlib.hwm_mib() - before
        kind = "rss_mib_above_loaded"
    return {"provider": args.provider, "precision": args.precision, "tokens": result["usage"]["prompt_tokens"],
            kind: extra_mb, "seconds": seconds, "estimate_mib": rr.runner.budget.row_bytes(
                result["usage"]["prompt_tokens"]) / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("check", choices=["golden", "throughput", "memory", "prefix"])
    ap.add_argument("--provider", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--workdir", default="/tmp/vlrank-gpu")
    ap.add_argument("--precisions", default="float16,bfloat16", help="golden: exports to check")
    ap.add_argument("--tolerance", type=float, default=1e-2, help="golden: max |Δscore| vs float32 golden")
    ap.add_argument("--precision", default="bfloat16", help="throughput / memory: the export's precision")
    ap.add_argument("--full-depth", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (the script's own CPU test)")
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--doc-tokens", type=int, default=500)
    ap.add_argument("--image-docs", type=int, default=16)
    ap.add_argument("--max-pixels", type=int, default=640 * 480)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--reference-python", default=None, help="a Python with torch (CUDA) + transformers")
    args = ap.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    result = {"golden": golden, "throughput": throughput, "memory": memory, "prefix": prefix}[args.check](args)
    print(json.dumps(result))
    return 0 if result.get("passed", True) else 1


if __name__ == "__main__":
    sys.exit(main())
