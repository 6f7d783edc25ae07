"""``vlrank serve``: the IONOS / OpenAI-compatible HTTP API over exported models."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vlrank.cli.common import add_command
from vlrank.inputs.policy import DEFAULT_MAX_VIDEO_BYTES

EXAMPLES = """examples:
  vlrank export Qwen/Qwen3-VL-Reranker-2B out/rr --task rerank
  vlrank serve --model reranker=out/rr
  vlrank serve --model reranker=out/rr --model embedder=out/emb --host 0.0.0.0 --port 8080
  VLRANK_API_KEY=secret vlrank serve --model reranker=out/rr --max-queue 64 --max-documents 500

  curl -s localhost:8000/v1/rerank -H 'Authorization: Bearer secret' -H 'Content-Type: application/json' \\
    -d '{"model": "reranker", "query": "capital of France?", "documents": ["Paris", "Berlin"], "top_n": 1}'

routes: POST /v1/rerank, POST /v1/embeddings, GET /v1/models, GET /health (503 until warm),
        GET /metrics (Prometheus), GET /openapi.json, GET /docs (with --docs);
        Cohere POST /v2/rerank, /v1/embed, /v2/embed; vLLM POST /score; TEI POST /rerank, /embed, GET /info
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "serve",
        help="serve exported models over HTTP (rerank + embeddings, batching across requests)",
        description="Serve exported vlrank models with an IONOS / OpenAI-compatible HTTP API. Each model's "
        "kind (reranker or embedder) comes from its vlrank.json. Concurrent requests to one model are packed "
        "into shared model batches. file:// URLs and local paths in requests are always refused; http(s) "
        "image URLs to private addresses only with --allow-private-urls.",
        examples=EXAMPLES, run=run,
    )
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH", dest="models",
                        help="serve the exported model directory PATH under the id NAME (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000; 0 = any free port)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on /v1/* (default: $VLRANK_API_KEY; none = open)")
    parser.add_argument("--max-queue", type=int, default=256, metavar="N",
                        help="requests waiting per model before answering 429 (default 256)")
    parser.add_argument("--max-documents", type=int, default=1000, metavar="N",
                        help="documents per rerank / inputs per embeddings request (default 1000; more -> 413)")
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024, metavar="N",
                        help="largest request body (default 64 MiB; more -> 413)")
    parser.add_argument("--max-batch-tokens", type=int, default=16384, metavar="N",
                        help="estimated token budget of one cross-request model batch (default 16384)")
    parser.add_argument("--allow-private-urls", action="store_true",
                        help="let http(s) image URLs point at private / loopback addresses")
    parser.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                        help="seconds a connection gets to send each request head (default 10; then 408 + close)")
    parser.add_argument("--body-timeout", type=float, default=60.0, metavar="S",
                        help="seconds a request body may take to arrive after its head (default 60; then 408)")
    parser.add_argument("--keep-alive-timeout", type=float, default=5.0, metavar="S",
                        help="seconds an idle keep-alive connection stays open (default 5)")
    parser.add_argument("--drain-timeout", type=float, default=20.0, metavar="S",
                        help="on SIGTERM / Ctrl-C, seconds queued requests get to finish before they are "
                             "answered 503 with Retry-After (default 20)")
    parser.add_argument("--max-image-pixels", type=int, default=64 * 1024 * 1024, metavar="N",
                        help="source pixels one image may have, checked from its header before decoding "
                             "(default 67108864 = 8192 x 8192; more -> 413; the model sees at most max_pixels)")
    parser.add_argument("--max-video-bytes", type=int, default=DEFAULT_MAX_VIDEO_BYTES, metavar="N",
                        help=f"bytes one video file (data URL or http(s)) may have (default {DEFAULT_MAX_VIDEO_BYTES} "
                             "= 256 MiB; more -> 413)")
    parser.add_argument("--docs", action="store_true",
                        help="serve Swagger UI at /docs (it loads its scripts from a CDN; /openapi.json is "
                             "always served)")
    parser.add_argument("--tei-default", default=None, metavar="NAME",
                        help="the model TEI's /rerank, /embed and /info use when a request names none (default: "
                             "the only model of the route's kind)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def parse_model_args(values: list[str]) -> dict[str, Path]:
    """["name=path", ...] -> {name: Path}; typed errors for a missing '=', empty parts or duplicates."""
    from vlrank.errors import InvalidInputError

    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise InvalidInputError(f"--model {value!r}: expected NAME=PATH, e.g. --model reranker=out/rr",
                                    field="--model")
        if name in out:
            raise InvalidInputError(f"--model: id {name!r} is given twice; use a distinct NAME per model",
                                    field="--model")
        out[name] = Path(path).expanduser()
    return out


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from vlrank.server import ServerSettings, api_key_from_env, create_app, spec_from_path, uvicorn_options

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServerSettings(
        api_key=args.api_key or api_key_from_env(),
        max_queue=args.max_queue,
        max_documents=args.max_documents,
        max_body_bytes=args.max_body_bytes,
        max_batch_tokens=args.max_batch_tokens,
        allow_private_urls=args.allow_private_urls,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keep_alive_s=args.keep_alive_timeout,
        drain_timeout_s=args.drain_timeout,
        docs=args.docs,
        max_image_pixels=args.max_image_pixels,
        max_video_bytes=args.max_video_bytes,
        tei_default=args.tei_default,
    )
    policy = settings.fetch_policy()
    # Manifests are read now so a wrong path fails before the port is bound; weights load in the background.
    specs = {name: spec_from_path(name, path, policy=policy, max_image_pixels=settings.max_image_pixels)
             for name, path in parse_model_args(args.models).items()}
    if args.tei_default is not None and args.tei_default not in specs:
        print(f"vlrank serve: --tei-default {args.tei_default!r} is not one of the --model names "
              f"({', '.join(specs)}); pass one of them", file=sys.stderr)
        return 2
    app = create_app(specs, settings=settings)
    if settings.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print("vlrank serve: warning: no API key and listening beyond localhost", file=sys.stderr)
    # This process only serves: a shorter GIL switch interval lets the event loop take the GIL back from the
    # model thread's Python code quickly (default 5 ms per hand-over would cap small-request throughput).
    sys.setswitchinterval(0.0005)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, **uvicorn_options(app, settings))
    return 0
