"""vLLM's score API (``POST /score`` and ``POST /v1/score``) over the served rerankers.

vLLM pairs ``text_1`` with ``text_2``: one ``text_1`` against every ``text_2`` (1 -> N), or ``text_1[i]``
with ``text_2[i]`` (N -> N, equal lengths). The answer lists one score per pair *in pair order* (not
sorted): ``{"id", "object": "list", "created", "model", "data": [{"index", "object": "score", "score"}],
"usage"}``. A 1 -> N request is one rerank call; N -> N pairs are N calls the scheduler batches together.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .state import ClientGone, ServerState, unless_cancelled_in_shutdown
from .cohere import check_document_count
from .engines import RERANK
from .errors import ApiError
from .schemas import ERROR_RESPONSES, ScoreRequest, ScoreResponse

ROUTES = frozenset({"/score", "/v1/score"})


def pairs(text_1: str | list[str], text_2: str | list[str]) -> list[tuple[str, list[str]]]:
    """(query, documents) calls for vLLM's pairing rule; unequal list lengths are a 400 on text_2."""
    queries = [text_1] if isinstance(text_1, str) else list(text_1)
    docs = [text_2] if isinstance(text_2, str) else list(text_2)
    if len(queries) == 1:
        return [(queries[0], docs)]
    if len(queries) != len(docs):
        raise ApiError(400, f"text_2: {len(docs)} texts for {len(queries)} text_1 entries; pass one text_1, or "
                            "as many text_2 as text_1 (pairs)", param="text_2", code="invalid_value")
    return [(q, [d]) for q, d in zip(queries, docs)]


def score_items(results: list[dict[str, Any]], *, raw_scores: bool) -> list[dict[str, Any]]:
    """One item per pair, in pair order, from the rerank results of the calls (each best first)."""
    items: list[dict[str, Any]] = []
    for result in results:
        for r in sorted(result["results"], key=lambda r: r["index"]):
            item = {"index": len(items), "object": "score", "score": r["relevance_score"]}
            if raw_scores:
                item["raw_score"] = r["raw_score"]
            items.append(item)
    return items


def add_routes(app: FastAPI, state: ServerState, *, auth: dict[str, Any]) -> None:
    """Register ``POST /score`` and ``POST /v1/score`` on ``app``."""

    async def score(body: ScoreRequest, request: Request) -> Response:
        return await unless_cancelled_in_shutdown(state, _score(body, request))

    async def _score(body: ScoreRequest, request: Request) -> Response:
        served = state.model(body.model, RERANK)
        calls = pairs(body.text_1, body.text_2)
        check_document_count(sum(len(d) for _, d in calls), state.settings.max_documents, field="text_2")
        prepared = [await state.prepare(served, request, query=q, documents=d, top_n=None, instruction=None,
                                        return_documents=False, raw_scores=body.raw_scores) for q, d in calls]
        try:
            results = await asyncio.gather(*(state.execute(served, p, request) for p in prepared))
        except ClientGone:
            return Response(status_code=499)
        prompt = sum(r["usage"]["prompt_tokens"] for r in results)
        return JSONResponse({"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                             "model": served.name, "data": score_items(results, raw_scores=body.raw_scores),
                             "usage": {"prompt_tokens": prompt, "total_tokens": prompt}})

    for path in sorted(ROUTES):
        app.post(path, summary="score text pairs (vLLM score API)", openapi_extra=auth,
                 response_model=ScoreResponse, response_model_exclude_none=True,
                 responses={200: {"description": "one score per pair, in pair order"}, **ERROR_RESPONSES})(score)
