"""Server overhead and cross-request batching, measured on a real server (uvicorn on 127.0.0.1).

1. Overhead: a 1-document rerank through HTTP vs the same call on the library directly (p50 / p99).
2. Throughput: 1-document rerank requests at concurrency 1 vs 32 (documents per second); the ratio is
   what batching across requests buys.

    python benches/bench_server.py                 # tiny golden Qwen3-VL, writes benches/RESULTS.md
    python benches/bench_server.py --requests 2000 --no-write

The tiny model (hidden 32) makes the model cost per document small, so this measures the serving path
(HTTP, JSON, scheduling, per-call overhead of the facade) rather than the model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"
sys.path.insert(0, str(REPO / "tests"))

QUERY = "What is the capital of France?"
DOC = "Paris is the capital and largest city of France."
BEGIN, END = "<!-- bench_server:begin -->", "<!-- bench_server:end -->"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def library_latency(model, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        model.rerank(QUERY, [f"{DOC} #{i}"], top_n=None)
        out.append(time.perf_counter() - t0)
    return out


def server_latency(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(n):
            body = {"model": "rr", "query": QUERY, "documents": [f"{DOC} #{i}"]}
            t0 = time.perf_counter()
            r = client.post("/v1/rerank", json=body)
            out.append(time.perf_counter() - t0)
            r.raise_for_status()
    return out


async def throughput(url: str, *, total: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        counter = iter(range(total))

        async def worker() -> None:
            for i in counter:
                r = await client.post("/v1/rerank", json={"model": "rr", "query": QUERY, "documents": [f"{DOC} {i}"]})
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=GOLDEN / "models" / "tiny-qwen3-vl")
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1000, help="requests per throughput run")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update benches/RESULTS.md")
    args = parser.parse_args()

    import vlrank
    from server_support import LiveServer
    from vlrank.export import export
    from vlrank.server import ServerSettings, create_app

    out = Path(tempfile.mkdtemp(prefix="vlrank-bench-server-")) / "rr"
    export(args.checkpoint, out, task="rerank", progress=False)
    direct = vlrank.Reranker(str(out), name="rr")
    served = vlrank.Reranker(str(out), name="rr")
    library_latency(direct, 20)  # warm up
    lib = library_latency(direct, args.latency_requests)

    app = create_app({"rr": served}, settings=ServerSettings(max_queue=4096))
    with LiveServer(app) as server:
        server_latency(server.url, 20)
        srv = server_latency(server.url, args.latency_requests)
        asyncio.run(throughput(server.url, total=64, concurrency=8))  # warm the connection pool path
        t1 = asyncio.run(throughput(server.url, total=args.requests, concurrency=1))
        t32 = asyncio.run(throughput(server.url, total=args.requests, concurrency=32))
        batching = "rerank_many (one model plan per scheduler batch)" if hasattr(served, "rerank_many") \
            else "public rerank() per request (facade has no rerank_many yet)"

    ms = lambda v: f"{v * 1e3:.2f} ms"  # noqa: E731
    rows = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"model: {args.checkpoint.name} (exported float32, CPU); batching path: {batching}.",
        "",
        "| 1-document rerank | p50 | p99 |",
        "|---|---|---|",
        f"| library `rerank()` | {ms(statistics.median(lib))} | {ms(percentile(lib, 99))} |",
        f"| HTTP `POST /v1/rerank` (keep-alive) | {ms(statistics.median(srv))} | {ms(percentile(srv, 99))} |",
        f"| server overhead | {ms(statistics.median(srv) - statistics.median(lib))} | "
        f"{ms(percentile(srv, 99) - percentile(lib, 99))} |",
        "",
        f"| throughput, {args.requests} 1-document requests | docs/s |",
        "|---|---|",
        f"| concurrency 1 | {t1:.0f} |",
        f"| concurrency 32 | {t32:.0f} |",
        f"| ratio | {t32 / t1:.2f}x |",
    ]
    text = "\n".join(rows)
    print(text)
    if not args.no_write:
        write_section(REPO / "benches" / "RESULTS.md", "## Server (benches/bench_server.py)\n\n" + text + "\n")
    return 0


def write_section(path: Path, body: str) -> None:
    """Replace only this bench's marked section; other benches own the rest of the file."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{BEGIN}\n{body}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
