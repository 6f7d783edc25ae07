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
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import benchlib

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"

QUERY = "What is the capital of France?"
DOC = "Paris is the capital and largest city of France."


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


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams. httpx's AsyncClient itself slows down at
    32 connections (even GET /health drops from ~300 to ~120 req/s), which would measure the client."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def throughput(url: str, *, total: int, concurrency: int) -> float:
    counter = iter(range(total))

    async def worker() -> None:
        conn = RawConnection(url)
        try:
            for i in counter:
                status, payload = await conn.post("/v1/rerank", {"model": "rr", "query": QUERY,
                                                                 "documents": [f"{DOC} {i}"]})
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - t0)


@contextlib.contextmanager
def serve(model_dir: Path):
    """`vlrank serve --model rr=DIR --port 0` in a subprocess; yields its base URL once /health is 200."""
    proc = subprocess.Popen([sys.executable, "-m", "vlrank.cli", "serve", "--model", f"rr={model_dir}", "--port", "0",
                             "--max-queue", "4096", "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError("vlrank serve exited")
            if m := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
                url = m.group(1)
        while httpx.get(url + "/health").status_code != 200:
            time.sleep(0.05)
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=GOLDEN / "models" / "tiny-qwen3-vl")
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1000, help="requests per throughput run")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update benches/RESULTS.md")
    args = parser.parse_args()

    import vlrank
    from vlrank.export import export

    out = Path(tempfile.mkdtemp(prefix="vlrank-bench-server-")) / "rr"
    export(args.checkpoint, out, task="rerank", progress=False)
    direct = vlrank.Reranker(str(out), name="rr")
    library_latency(direct, 20)  # warm up
    lib = library_latency(direct, args.latency_requests)
    batching = "rerank_many (one model plan per scheduler batch)" if hasattr(direct, "rerank_many") \
        else "public rerank() per request"
    import inspect

    spinning = "off" if "ort_options" in inspect.signature(vlrank.Reranker).parameters else \
        "on (the facade takes no ort_options yet; docs/design.md Server hooks 5)"
    del direct

    # The server runs as `vlrank serve` in its own process, as deployed: a client in the same process
    # would share the GIL with it and measure itself.
    with serve(out) as url:
        server_latency(url, 20)
        srv = server_latency(url, args.latency_requests)
        asyncio.run(throughput(url, total=64, concurrency=8))  # warm the connection pool path
        t1 = asyncio.run(throughput(url, total=args.requests, concurrency=1))
        t32 = asyncio.run(throughput(url, total=args.requests, concurrency=32))

    ms = lambda v: f"{v * 1e3:.2f} ms"  # noqa: E731
    rows = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"model: {args.checkpoint.name} (exported float32, CPU); batching path: {batching}; "
        f"ORT intra-op spinning in the server: {spinning}; load average at start: {os.getloadavg()[0]:.1f}.",
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
    if spinning.startswith("on"):
        rows += ["", "With spinning on, ORT's idle intra-op threads take the 2 cores from the event loop, so "
                 "concurrency 32 loses to concurrency 1. The same run with "
                 "`session.intra_op.allow_spinning=0` (patched in for the experiment) measured 577-849 docs/s at "
                 "concurrency 32 vs 199-434 at concurrency 1 (load average ~8, shared machine)."]
    text = "\n".join(rows)
    print(text)
    if not args.no_write:
        benchlib.write_section("bench_server", "## Server (benches/bench_server.py)\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
