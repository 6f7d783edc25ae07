"""Server overhead and cross-request batching, measured on a real server (uvicorn on 127.0.0.1).

1. Overhead: a 1-input call through HTTP vs the same call on the library directly (p50 / p99), per route:
   rerank on /v1/rerank and TEI's /rerank (vs ``Reranker.rerank``), embed on /v1/embeddings, TEI's /embed and
   Cohere's /v2/embed (vs ``Embedder.embed``); the last column compares each route's p50 overhead with the
   existing route of its kind (/v1/rerank, /v1/embeddings).
2. Throughput: 1-document rerank requests at concurrency 1 vs 32 (documents per second); the ratio is
   what batching across requests buys.

    python benches/bench_server.py                 # tiny golden Qwen3-VL, writes benches/RESULTS.md
    python benches/bench_server.py --latency-requests 20 --requests 50 --no-write    # smoke run

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import benchlib

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"

QUERY = "What is the capital of France?"
DOC = "Paris is the capital and largest city of France."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def library_latency(call: Callable[[str], Any], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        call(f"{DOC} #{i}")
        out.append(time.perf_counter() - t0)
    return out


def library_call(task: Any, kind: str) -> Callable[[str], Any]:
    """The library call a route is measured against, for one input."""
    if kind == "rerank":
        return lambda doc: task.rerank(QUERY, [doc], top_n=None)
    return lambda doc: task.embed([doc])


# route -> (the library call it is measured against, the request body for one input, its row label)
ROUTES: dict[str, tuple[str, Callable[[str], dict], str]] = {
    "/v1/rerank": ("rerank", lambda d: {"model": "rr", "query": QUERY, "documents": [d]}, "`POST /v1/rerank`"),
    "/rerank": ("rerank", lambda d: {"query": QUERY, "texts": [d]}, "TEI `POST /rerank`"),
    "/v1/embeddings": ("embed", lambda d: {"model": "em", "input": [d]}, "`POST /v1/embeddings`"),
    "/embed": ("embed", lambda d: {"inputs": [d]}, "TEI `POST /embed`"),
    "/v2/embed": ("embed", lambda d: {"model": "em", "texts": [d], "input_type": "search_document",
                                      "embedding_types": ["float"]}, "Cohere `POST /v2/embed`"),
}
BASELINE = {"rerank": "/v1/rerank", "embed": "/v1/embeddings"}


def server_latency(url: str, path: str, n: int) -> list[float]:
    body = ROUTES[path][1]
    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(n):
            t0 = time.perf_counter()
            r = client.post(path, json=body(f"{DOC} #{i}"))
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
def serve(models: dict[str, Path]):
    """`vlrank serve --model NAME=DIR ... --port 0` in a subprocess; yields its base URL once /health is 200."""
    specs = [arg for name, path in models.items() for arg in ("--model", f"{name}={path}")]
    proc = subprocess.Popen([sys.executable, "-m", "vlrank.cli", "serve", *specs, "--port", "0",
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

    root = Path(tempfile.mkdtemp(prefix="vlrank-bench-server-"))
    models = {"rr": export(args.checkpoint, root / "rr", task="rerank", progress=False),
              "em": export(args.checkpoint, root / "em", task="embed", progress=False)}
    direct = vlrank.Reranker(str(models["rr"]), name="rr")
    embedder = vlrank.Embedder(str(models["em"]), name="em")
    calls = {"rerank": library_call(direct, "rerank"), "embed": library_call(embedder, "embed")}
    lib = {}
    for kind, call in calls.items():
        library_latency(call, 20)  # warm up
        lib[kind] = library_latency(call, args.latency_requests)
    batching = "rerank_many (one model plan per scheduler batch)" if hasattr(direct, "rerank_many") \
        else "public rerank() per request"
    import inspect

    spinning = "off" if "ort_options" in inspect.signature(vlrank.Reranker).parameters else \
        "on (the facade takes no ort_options yet; docs/design.md Server hooks 5)"
    del direct, embedder, calls

    # The server runs as `vlrank serve` in its own process, as deployed: a client in the same process
    # would share the GIL with it and measure itself.
    srv = {}
    with serve(models) as url:
        for path in ROUTES:
            server_latency(url, path, 20)  # warm up the route (first-request imports, connection)
            srv[path] = server_latency(url, path, args.latency_requests)
        asyncio.run(throughput(url, total=64, concurrency=8))  # warm the connection pool path
        t1 = asyncio.run(throughput(url, total=args.requests, concurrency=1))
        t32 = asyncio.run(throughput(url, total=args.requests, concurrency=32))

    ms = lambda v: f"{v * 1e3:.2f} ms"  # noqa: E731
    p50, p99 = statistics.median, lambda v: percentile(v, 99)
    overhead = {path: (p50(srv[path]) - p50(lib[kind]), p99(srv[path]) - p99(lib[kind]))
                for path, (kind, _, _) in ROUTES.items()}
    rows = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"model: {args.checkpoint.name} (exported float32, CPU); batching path: {batching}; "
        f"ORT intra-op spinning in the server: {spinning}; load average at start: {os.getloadavg()[0]:.1f}; "
        f"{args.latency_requests} sequential calls per row.",
        "",
        "| 1-input call (HTTP keep-alive) | p50 | p99 | overhead p50 | overhead p99 | overhead p50 vs the "
        "existing route |",
        "|---|---|---|---|---|---|",
    ]
    for kind, label in (("rerank", "library `rerank()`"), ("embed", "library `embed()`")):
        rows.append(f"| {label} | {ms(p50(lib[kind]))} | {ms(p99(lib[kind]))} | | | |")
        for path, (route_kind, _, row) in ROUTES.items():
            if route_kind != kind:
                continue
            base = overhead[BASELINE[kind]][0]
            ratio = f"{overhead[path][0] / base:.2f}x" if base > 0 else "n/a"
            rows.append(f"| {row} | {ms(p50(srv[path]))} | {ms(p99(srv[path]))} | {ms(overhead[path][0])} | "
                        f"{ms(overhead[path][1])} | {ratio} |")
    rows += [
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
    # finish(): prints, and writes RESULTS.md only when the machine was quiet as the bench started.
    return benchlib.finish("## Server (benches/bench_server.py)\n\n" + "\n".join(rows), section="bench_server",
                           args=args)


if __name__ == "__main__":
    sys.exit(main())
