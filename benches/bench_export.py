"""Export time and peak memory of ``vlrank.export`` on a checkpoint of more than 1 GB.

A random Qwen3 text checkpoint of the Qwen3-0.6B shape (hidden 1024, 16 layers, 16 heads / 8 KV,
head_dim 128, intermediate 3072, untied LM head, real 151,936 vocabulary: ~1.13 GB of bf16
safetensors) is written once (default /tmp/vlrank-bench-export) and exported to float32 and float16.
Each export runs in its own subprocess, so the peak resident set is the export's own:

- peak RSS: the child's ``VmHWM`` (/proc/self/status; not ``getrusage().ru_maxrss``, which Linux carries
  across fork + exec, so the child would report the parent's peak). It includes the memory-mapped
  checkpoint pages the export touched, which the kernel can drop at will;
- peak anonymous RSS: ``RssAnon`` of /proc/self/status sampled every 20 ms by a thread in the child
  (the heap: what the export really allocates);
- both also minus the child's baseline after ``import vlrank`` (interpreter, numpy, onnx, the extension).

The aim: the peak above baseline near the largest single tensor (the 151,936 x 1024 embedding table),
not a multiple of the model. Prints a table and replaces the ``bench_export`` section of benches/RESULTS.md.

    python benches/bench_export.py [--quick] [--workdir /tmp/vlrank-bench-export] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import benchlib

MIB = 1024 * 1024
# Measured once (2026-11-22, same checkpoint and machine) with the exporter as of commit e18e1fe^, which
# copied every initializer with tobytes() and widened bf16 through two full-size arrays.
BEFORE_NOTE = ("Before the export memory fix (commit e18e1fe: initializers written from the array's own "
               "buffer, bf16 widened in place, float16 converted in blocks; byte-identical output) the same "
               "exports peaked at 1,203 MiB (float32) and 1,095 MiB (float16) of heap above baseline, i.e. "
               "2.03x / 1.84x the largest float32 tensor and 1.12x / 1.02x the checkpoint; peak RSS 1,548 MiB.")


def child(ckpt: str, out: str, dtype: str) -> None:
    """Runs inside the subprocess: one export, its own memory figures as JSON on stdout."""
    import vlrank
    import vlrank.export  # noqa: F401 - loaded on first use since round 4: the baseline keeps counting it and onnx

    baseline_rss = benchlib.status_kib("VmRSS") * 1024
    baseline_anon = benchlib.status_kib("RssAnon") * 1024
    peak = {"anon": baseline_anon}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["anon"] = max(peak["anon"], benchlib.status_kib("RssAnon") * 1024)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    vlrank.export(ckpt, out, dtype=dtype, progress=False)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak["anon"] = max(peak["anon"], benchlib.status_kib("RssAnon") * 1024)
    print(json.dumps({"seconds": seconds, "baseline_rss": baseline_rss, "baseline_anon": baseline_anon,
                      "peak_rss": benchlib.status_kib("VmHWM") * 1024,
                      "peak_anon": peak["anon"]}))


def largest_tensor(ckpt: Path) -> tuple[str, int, list[int]]:
    """(name, bytes as stored, shape) of the checkpoint's largest tensor, from the safetensors headers."""
    best = ("", 0, [])
    for file in sorted(ckpt.glob("*.safetensors")):
        with open(file, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            nbytes = info["data_offsets"][1] - info["data_offsets"][0]
            if nbytes > best[1]:
                best = (name, nbytes, info["shape"])
    return best


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("CKPT", "OUT", "DTYPE"), help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="a 4-layer hidden-512 checkpoint, no RESULTS.md")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vlrank-bench-export"))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    ap.add_argument("--no-write", action="store_true", help="do not touch benches/RESULTS.md")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0

    from vlrank.synthetic import TextShape, write_random_qwen3

    if args.quick:
        shape, tag, args.no_write = TextShape(hidden=512, layers=4, heads=8, kv_heads=4, head_dim=64,
                                              intermediate=1536), "quick", True
    else:
        shape, tag = TextShape(hidden=1024, layers=16, heads=16, kv_heads=8, head_dim=128, intermediate=3072), "1gb"
    info = benchlib.machine()
    load_start = benchlib.load_average()
    ckpt = args.workdir / f"Qwen3-Reranker-random-{tag}"
    if not (ckpt / "model.safetensors").is_file():
        benchlib.eprint(f"writing the random checkpoint to {ckpt} (once) ...")
        write_random_qwen3(ckpt, shape=shape, seed=0, tokenizer_json=benchlib.tokenizer_json())
    ckpt_bytes = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    big_name, big_bytes, big_shape = largest_tensor(ckpt)
    big_f32 = big_bytes // 2 * 4  # bf16 -> float32

    rows = []
    for dtype in args.dtypes:
        out = args.workdir / f"exported-{tag}-{dtype}"
        shutil.rmtree(out, ignore_errors=True)
        benchlib.eprint(f"export {dtype} ...")
        proc = subprocess.run([sys.executable, __file__, "--child", str(ckpt), str(out), dtype],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"export {dtype} failed:\n{proc.stderr[-4000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r.update(dtype=dtype, out_bytes=dir_bytes(out))
        rows.append(r)
        shutil.rmtree(out, ignore_errors=True)
    load_end = benchlib.load_average()

    def mib(n: float) -> str:
        return f"{n / MIB:,.0f} MiB"

    table = ["| export dtype | time | output size | peak RSS | peak RSS above baseline | peak heap (RssAnon) above "
             "baseline | heap peak / checkpoint | heap peak / largest tensor (f32) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        heap = r["peak_anon"] - r["baseline_anon"]
        table.append(f"| {r['dtype']} | {r['seconds']:.1f} s | {mib(r['out_bytes'])} | {mib(r['peak_rss'])} | "
                     f"{mib(r['peak_rss'] - r['baseline_rss'])} | {mib(heap)} | {heap / ckpt_bytes:.2f} | "
                     f"{heap / big_f32:.2f} |")
    md = "\n".join([
        "## Export time and memory (bench_export.py)",
        "",
        f"Random Qwen3 checkpoint (hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads / "
        f"{shape.kv_heads} KV, head_dim {shape.head_dim}, intermediate {shape.intermediate}, vocab {shape.vocab}, "
        f"untied LM head): {mib(ckpt_bytes)} of bf16 safetensors; largest tensor `{big_name}` {big_shape} = "
        f"{mib(big_bytes)} as bf16, {mib(big_f32)} as float32. Each export in its own subprocess; baseline = the "
        f"child after `import vlrank` ({mib(rows[0]['baseline_rss'])} RSS, {mib(rows[0]['baseline_anon'])} "
        "anonymous). Peak RSS counts the memory-mapped checkpoint pages the export touched (file-backed, "
        "reclaimable); RssAnon (sampled every 20 ms) is the memory the export allocates.",
        "",
        *table,
        "",
        BEFORE_NOTE if tag == "1gb" else "",
        "",
        benchlib.machine_line(info, load_start, load_end),
    ])
    return benchlib.finish(md, section="bench_export", args=args)


if __name__ == "__main__":
    sys.exit(main())
