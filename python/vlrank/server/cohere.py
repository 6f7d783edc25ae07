"""Cohere's rerank API v2 (``POST /v2/rerank``) over the served rerankers.

Cohere v2 answers ``{"id", "results": [{"index", "relevance_score"}], "meta"}``: results best first, no
documents (``return_documents`` is a vlrank extension that echoes them; ``raw_scores`` adds each logit).
``max_tokens_per_doc`` caps each document's text as the library does (and the other long-document keywords of
``Reranker.rerank`` are vlrank extensions); ``priority`` is accepted so Cohere clients work unchanged, is not
applied, and ``meta.warnings`` says so when it is sent.
``POST /v1/rerank`` is the IONOS shape, which Cohere v1 clients read as it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from .engines import RERANK
from .route import serve
from .state import ServerState
from .schemas import ERROR_RESPONSES, CohereV2RerankRequest, CohereV2RerankResponse

ROUTES = frozenset({"/v2/rerank"})


def v2_result(result: dict[str, Any], *, warnings: list[str]) -> dict[str, Any]:
    """The library's IONOS rerank result in Cohere's v2 shape (results keep their extension fields)."""
    tokens = result["usage"]["prompt_tokens"]
    meta: dict[str, Any] = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                            "tokens": {"input_tokens": tokens, "output_tokens": 0}}
    if warnings:
        meta["warnings"] = warnings
    return {"id": result["id"], "results": result["results"], "meta": meta}


def add_routes(app: FastAPI, state: ServerState, *, auth: dict[str, Any]) -> None:
    """Register ``POST /v2/rerank`` on ``app``."""

    @app.post("/v2/rerank", summary="score documents against a query (Cohere rerank v2)", openapi_extra=auth,
              response_model=CohereV2RerankResponse, response_model_exclude_none=True,
              responses={200: {"description": "results sorted by relevance_score"}, **ERROR_RESPONSES})
    async def rerank_v2(body: CohereV2RerankRequest, request: Request) -> Response:
        call = {"query": body.query, "documents": body.documents, "top_n": body.top_n,
                "instruction": body.instruction, "return_documents": body.return_documents,
                "raw_scores": body.raw_scores, **body.long_document_call()}
        warnings = ["priority is not applied by vlrank"] if body.priority is not None else []
        return await serve(state, request, model=body.model, kind=RERANK, calls=[call],
                           count=len(body.documents), count_field="documents",
                           shape=lambda results: v2_result(results[0], warnings=warnings))
