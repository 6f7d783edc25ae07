"""The FastAPI application: routes, auth, limits and metrics over the shared ``ServerState``.

``create_app(models, settings=...)`` takes facade objects (``vlrank.Reranker`` / ``vlrank.Embedder``)
or ``ModelSpec`` loaders keyed by the id clients use in ``"model"``. The server listens at once; models
load and warm up in the background and /health answers 503 until all are ready (load balancers then
only route to warm replicas). The IONOS/OpenAI routes live here; Cohere v2 and vLLM's /score in their own
modules over the same state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from . import api_docs, cohere, cohere_embed, score, tei
from .engines import EMBED, RERANK
from .errors import install_handlers
from .memory import map_large_buffers
from .middleware import AuthMiddleware, BodyLimitMiddleware, MetricsMiddleware
from .schemas import (
    ERROR_RESPONSES,
    EmbeddingRequest,
    ErrorResponse,
    ModelList,
    RerankRequest,
    RerankResponse,
)
from .settings import ServerSettings
from .route import serve
from .state import READY, STOPPING, ServerState

log = logging.getLogger("vlrank.server")

ROUTES = frozenset({"/v1/rerank", "/v1/embeddings", "/v1/models", "/health", "/metrics", "/openapi.json", "/docs",
                    "/v2/rerank", "/score", "/v1/score"}) | tei.ROUTES | tei.EXACT_ROUTES | cohere_embed.ROUTES


def create_app(models: Mapping[str, Any], *, settings: ServerSettings | None = None) -> FastAPI:
    """The HTTP app serving ``models`` (id -> facade object or ``ModelSpec``) under ``settings``."""
    settings = settings or ServerSettings()
    if not models:
        raise ValueError("models: serve at least one model (id -> vlrank.Reranker / vlrank.Embedder / ModelSpec)")
    if settings.tei_default is not None and settings.tei_default not in models:
        raise ValueError(f"tei_default: {settings.tei_default!r} is not a served model; pass one of "
                         f"{', '.join(models)}")
    state = ServerState(models, settings)
    map_large_buffers()  # decoded media go back to the system when freed (memory.py)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(state.load_all())
        try:
            yield
        finally:
            if not loader.done():
                loader.cancel()
                await asyncio.gather(loader, return_exceptions=True)
            await state.drain()

    from vlrank.version import __version__

    app = FastAPI(
        title="vlrank",
        version=__version__,
        description="Rerank and embed text and images with Qwen3 retrieval models (IONOS / OpenAI-compatible).",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a CDN: off unless asked for (--docs); the schema
        # itself (/openapi.json) is always served.
        docs_url="/docs" if settings.docs else None,
        redoc_url=None,
    )
    app.state.vlrank = state
    install_handlers(app)
    # add_middleware wraps: the last added runs first. Order of a request: metrics (sees every answer),
    # auth (401 before any body is read), body cap (413), then routing.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes,
                       body_timeout_s=settings.body_timeout_s)

    # Auth is checked in a pure ASGI middleware (before the body is parsed, so an unauthenticated client
    # learns nothing about validation); FastAPI dependencies would cost a thread hop per request.
    app.add_middleware(AuthMiddleware, api_key=settings.api_key, protected_prefix=("/v1/", "/v2/", "/score",
                                                                          *sorted(tei.ROUTES)),
                       protected_paths=tei.EXACT_ROUTES)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, known_paths=ROUTES)
    auth = {"security": [{"bearer": []}]} if settings.api_key is not None else {}

    @app.get("/health", summary="readiness: 200 once every model is loaded and warmed, else 503",
             responses={503: {"description": "loading, failed, or shutting down"}})
    async def health() -> JSONResponse:
        status = STOPPING if state.draining else state.status
        models = {name: STOPPING if state.draining and st == READY else st for name, st in state.model_states.items()}
        body: dict[str, Any] = {"status": status, "models": dict(sorted(models.items()))}
        if status == READY:
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers=state.retry_headers())

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/models", summary="the served models", openapi_extra=auth, response_model=ModelList,
             responses={401: ERROR_RESPONSES[401]})
    async def list_models() -> dict[str, Any]:
        data = [{"id": m.name, "object": "model", "created": m.created, "owned_by": "vlrank",
                 "type": "rerank" if m.kind == RERANK else "embedding"} for m in state.models.values()]
        return {"object": "list", "data": data}

    @app.post("/v1/rerank", summary="score documents against a query (IONOS rerank)", openapi_extra=auth,
              response_model=RerankResponse, responses={200: {"description": "results sorted by relevance_score"}, **ERROR_RESPONSES})
    async def rerank(body: RerankRequest, request: Request) -> Response:
        call = {"query": body.query, "documents": body.documents, "top_n": body.top_n,
                "instruction": body.instruction, "return_documents": body.return_documents,
                "raw_scores": body.raw_scores, **body.long_document_call()}
        return await serve(state, request, model=body.model, kind=RERANK, calls=[call],
                           count=_document_count(body.documents), count_field="documents", shape=_only)

    @app.post("/v1/embeddings", summary="embed texts and images (OpenAI / IONOS embeddings)",
              openapi_extra=auth,
              responses={200: {"description": "one embedding per input, in input order"}, **ERROR_RESPONSES})
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        call = {"input": body.input, "messages": body.messages, "instruction": body.instruction,
                "dimensions": body.dimensions, "encoding_format": body.encoding_format}
        if body.truncate != "END":  # today's default stays implicit, so other engines' calls are unchanged
            call["truncate"] = body.truncate
        count = len(body.input) if isinstance(body.input, list) else 1
        return await serve(state, request, model=body.model, kind=EMBED, calls=[call], count=count,
                           count_field="input", noun="inputs", count_code="too_many_inputs", shape=_only)

    cohere.add_routes(app, state, auth=auth)
    score.add_routes(app, state, auth=auth)
    tei.add_routes(app, state, auth=auth)
    cohere_embed.add_routes(app, state, auth=auth)
    api_docs.name_served_models(app, models)
    _ = ErrorResponse  # documented through ERROR_RESPONSES
    if settings.api_key is not None:
        _declare_bearer(app)
    return app


def _declare_bearer(app: FastAPI) -> None:
    """Add the bearer scheme to /openapi.json (the middleware enforces it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer",
                "description": "the server's API key (--api-key / VLRANK_API_KEY)"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _only(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The library's result of a one-call request is the IONOS / OpenAI body as it is."""
    return results[0]


def _document_count(documents: Any) -> int:
    if isinstance(documents, dict):
        content = documents.get("content")
        return len(content) if isinstance(content, list) else 1
    return len(documents)
