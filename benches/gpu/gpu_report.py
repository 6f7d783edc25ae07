"""The markdown table of a benches/gpu/run.sh run (its results.jsonl); ``--write`` replaces the
``bench_gpu`` section of benches/RESULTS.md (a CUDA run only: a CPU run checks the script, not a GPU)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402


def _rate(d: dict | None) -> str:
    if not d:
        return "–"
    if "error" in d:
        return f"failed ({d['error'][:60]})"
    return f"{d['docs_per_s']:.1f} docs/s, p50 {d['p50_s'] * 1000:.0f} ms"


def report(results: list[dict], *, mode: str, elapsed: int) -> str:
    by = {r["check"]: r for r in results}
    lines = [f"## bench_gpu: benches/gpu/run.sh ({mode}, {elapsed} s in all)", ""]
    g = by.get("golden")
    if g:
        lines += ["| golden rerank cases | scores | max abs delta vs float32 golden | tolerance | passed |",
                  "|---|---|---|---|---|"]
        for precision, p in g["precisions"].items():
            lines.append(f"| {precision} export on {g['provider']} | {p['scores']} | {p['max_abs_delta']:.2e} | "
                         f"{g['tolerance']:g} | {'yes' if p['passed'] else '**no**'} |")
        lines.append("")
    t = by.get("throughput")
    if t:
        ref = t.get("transformers", {})
        lines += [f"Throughput ({t['precision']}, {t['layers']} text layers):", "",
                  "| documents | vlrank | transformers (bf16, SDPA) |", "|---|---|---|"]
        for name, label in (("text", f"{t['docs']} text documents of ~{t['doc_tokens']} tokens"),
                            ("images", f"{t['image_docs']} image documents")):
            lines.append(f"| {label} | {_rate(t['vlrank'].get(name))} | "
                         f"{_rate(ref.get(name) if 'error' not in ref else ref) if ref else 'not run'} |")
        lines.append("")
    m = by.get("memory")
    if m:
        key = next(k for k in m if k.endswith("_above_loaded"))
        what = "GPU memory" if key.startswith("gpu") else "RSS"
        lines.append(f"One pair of {m['tokens']} tokens: {what} above the loaded model {m[key]:.0f} MiB "
                     f"(vlrank's budget estimate {m['estimate_mib']:.0f} MiB), {m['seconds']:.2f} s.")
    x = by.get("prefix")
    if x:
        lines += ["", f"Shared prompt prefix ({x['precision']}): a query image + question against {x['docs']} text "
                  f"documents of ~{x['doc_tokens']} tokens ({x['tokens']} prompt tokens): share_prefix off "
                  f"{_rate(x['off'])}, on {_rate(x['on'])} ({x['speedup']:.2f}x); max abs delta {x['max_abs_delta']:.1e} "
                  f"(tolerance {x['tolerance']:g}, {'passed' if x['passed'] else '**failed**'})."]
    lines += ["", f"Run {time.strftime('%Y-%m-%d')}; steps: "
              + ", ".join(f"{r['check']} {r['elapsed_s']} s" for r in results) + "."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("results")
    ap.add_argument("--mode", default="cuda")
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    results = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    table = report(results, mode=args.mode, elapsed=args.elapsed)
    print(table)
    if args.write and args.mode == "cuda":
        benchlib.write_section("bench_gpu", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
