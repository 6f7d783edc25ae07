"""``vlrank serve``: the IONOS / OpenAI-compatible HTTP API over exported models."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vlrank.cli.common import add_command, add_export_flags
from vlrank.inputs.policy import DEFAULT_MAX_VIDEO_BYTES

EXAMPLES = """examples:
  vlrank serve --model reranker=Qwen/Qwen3-VL-Reranker-2B              # hub id: downloaded, exported once
  vlrank serve --model reranker=ckpt/Qwen3-VL-Reranker-2B --precision float16 --providers cuda
  vlrank serve --model reranker=out/rr --model embedder=out/emb --host 0.0.0.0 --port 8080
  VLRANK_API_KEY=secret vlrank serve --model reranker=out/rr --max-queue 64 --max-documents 500 \\
      --intra-op-threads 4 --max-length 4096 --max-pixels 1003520

  curl -s localhost:8000/v1/rerank -H 'Authorization: Bearer secret' -H 'Content-Type: application/json' \\
    -d '{"model": "reranker", "query": "capital of France?", "documents": ["Paris", "Berlin"], "top_n": 1}'

routes (* = needs 'Authorization: Bearer KEY' when --api-key / $VLRANK_API_KEY is set):
  * POST /v1/rerank        IONOS / Jina-style rerank
  * POST /v2/rerank        Cohere rerank v2
  * POST /v1/score         vLLM score API (also POST /score *)
  * POST /v1/embeddings    OpenAI embeddings
  * GET  /v1/models        the served models
    GET  /health           200 when every model is ready; 503 while loading, failed or shutting down
    GET  /metrics          Prometheus metrics
    GET  /openapi.json     the API schema; GET /docs (Swagger UI) with --docs
  * POST /v2/embed         Cohere embed v2 (also POST /v1/embed *, v1)
  * POST /rerank           Hugging Face TEI rerank (--tei-default: the model when the body names none)
  * POST /embed            Hugging Face TEI embed
  * GET  /info             Hugging Face TEI model info
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "serve",
        help="serve models over HTTP (rerank + embeddings, batching across requests)",
        description="Serve vlrank models with an IONOS / OpenAI / Cohere-compatible HTTP API. A model is an "
        "exported directory, a checkpoint directory or a hub id (exported once on first use, then cached); its "
        "kind (reranker or embedder) comes from its vlrank.json or its checkpoint. Concurrent requests to one "
        "model are packed into shared model batches. file:// URLs and local paths in requests are always "
        "refused; http(s) image URLs to private addresses only with --allow-private-urls.",
        examples=EXAMPLES, run=run,
    )
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH", dest="models",
                        help="serve PATH under the id NAME (repeatable): an exported model directory, a checkpoint "
                             "directory or a hub id (exported once on first use with --dtype / --precision / "
                             "--quantize, then cached)")
    parser.add_argument("--task", action="append", default=[], metavar="NAME=TASK", dest="tasks",
                        help="the task (rerank or embed) of model NAME, where its checkpoint's config and name "
                             "cannot tell it (repeatable)")
    add_model_flags(parser)
    parser.add_argument("--keep-going", action="store_true",
                        help="keep serving when a model fails to load (/health answers 503 'failed'); without it "
                             "serve exits 1 with the reason")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000; 0 = any free port)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on /v1/*, /v2/*, /score and TEI's /rerank, /embed, /info (the routes marked * "
                             "below; /health, /metrics and /openapi.json stay open) (default: $VLRANK_API_KEY; "
                             "none = open)")
    parser.add_argument("--max-queue", type=int, default=256, metavar="N",
                        help="requests waiting per model before answering 429 (default 256)")
    parser.add_argument("--max-documents", type=int, default=1000, metavar="N",
                        help="documents per rerank / inputs per embeddings request (default 1000; more -> 413)")
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024, metavar="N",
                        help="largest request body (default 64 MiB; more -> 413)")
    parser.add_argument("--max-batch-tokens", type=int, default=16384, metavar="N",
                        help="prompt-token budget of one cross-request model batch (a request's exact tokens; default 16384)")
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


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """How every served model is loaded (the vlrank.Reranker / Embedder keywords of the same names)."""
    parser.add_argument("--providers", default=None, help="auto (default: CUDA when available), cpu or cuda")
    parser.add_argument("--max-length", type=int, default=None, metavar="N",
                        help="tokens per query + document pair / input (default: the model's)")
    parser.add_argument("--min-pixels", type=int, default=None, metavar="N",
                        help="smallest resized image area the model sees (default 4096)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="largest resized image area the model sees (default 1310720 = 1,280 image tokens)")
    parser.add_argument("--intra-op-threads", type=int, default=None, metavar="N", dest="threads",
                        help="ONNX Runtime intra-op threads per model (default: one per core)")
    add_export_flags(parser)


def parse_model_args(values: list[str]) -> dict[str, Path]:
    """["name=path", ...] -> {name: Path}; typed errors for a missing '=', empty parts or duplicates."""
    return {name: Path(path).expanduser() for name, path in _pairs(values, flag="--model", example="reranker=out/rr")}


def parse_task_args(values: list[str], *, models: dict[str, Path]) -> dict[str, str]:
    """["name=task", ...] -> {name: task} for served model names only."""
    from vlrank.errors import InvalidInputError

    out = dict(_pairs(values, flag="--task", example="reranker=rerank"))
    for name, task in out.items():
        if name not in models:
            raise InvalidInputError(f"--task {name}={task}: no --model {name}=...; name a served model",
                                    field="--task")
        if task not in ("rerank", "embed"):
            raise InvalidInputError(f"--task {name}={task}: pass rerank or embed", field="--task")
    return out


def _pairs(values: list[str], *, flag: str, example: str) -> list[tuple[str, str]]:
    from vlrank.errors import InvalidInputError

    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        name, rest = name.strip(), rest.strip()
        if not sep or not name or not rest:
            raise InvalidInputError(f"{flag} {value!r}: expected NAME={'PATH' if flag == '--model' else 'TASK'}, "
                                    f"e.g. {flag} {example}", field=flag)
        if name in out:
            raise InvalidInputError(f"{flag}: id {name!r} is given twice; use a distinct NAME per model", field=flag)
        out[name] = rest
    return list(out.items())


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from vlrank.server import (DrainingServer, ServerSettings, api_key_from_env, create_app, spec_from_path,
                               uvicorn_options)
    from vlrank.server.models import LoadOptions, ModelSpec

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
    options = LoadOptions(providers=args.providers, max_length=args.max_length, min_pixels=args.min_pixels,
                          max_pixels=args.max_pixels, threads=args.threads, dtype=args.dtype,
                          precision=args.precision, quantize=args.quantize)
    policy = settings.fetch_policy()
    # Paths are checked now so a wrong one fails before the port is bound; weights load in the background.
    models = parse_model_args(args.models)
    tasks = parse_task_args(args.tasks, models=models)
    specs = {name: spec_from_path(name, path, policy=policy, max_image_pixels=settings.max_image_pixels,
                                  options=options, task=tasks.get(name))
             for name, path in models.items()}
    if args.tei_default is not None and args.tei_default not in specs:
        print(f"vlrank serve: --tei-default {args.tei_default!r} is not one of the --model names "
              f"({', '.join(specs)}); pass one of them", file=sys.stderr)
        return 2
    failed: list[str] = []
    server: DrainingServer | None = None

    def stop_on_failure(name: str, spec: ModelSpec) -> ModelSpec:
        # A model that cannot load would leave a process answering 503 forever: say why in one line and stop
        # (exit 1), unless --keep-going asks to serve the others.
        def load():
            try:
                return spec.loader()
            except Exception as exc:
                failed.append(f"vlrank serve: error: model {name!r} failed to load: {' '.join(str(exc).split())}")
                if server is not None:
                    server.should_exit = True
                raise
        return ModelSpec(loader=load, kind=spec.kind)

    if not args.keep_going:
        specs = {name: stop_on_failure(name, spec) for name, spec in specs.items()}
    app = create_app(specs, settings=settings)
    if settings.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print("vlrank serve: warning: no API key and listening beyond localhost", file=sys.stderr)
    # This process only serves: a shorter GIL switch interval lets the event loop take the GIL back from the
    # model thread's Python code quickly (default 5 ms per hand-over would cap small-request throughput).
    sys.setswitchinterval(0.0005)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            **uvicorn_options(app, settings))
    server = DrainingServer(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C / SIGINT it drained on: a clean stop (as uvicorn.run)
        pass
    if failed:
        print("\n".join(failed), file=sys.stderr)
        return 1
    return 0
