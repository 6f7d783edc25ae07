"""vLLM's score API (``POST /score`` and ``POST /v1/score``) over the served rerankers.

vLLM pairs ``text_1`` with ``text_2``: one ``text_1`` against every ``text_2`` (1 -> N), or ``text_1[i]``
with ``text_2[i]`` (N -> N, equal lengths). The answer lists one score per pair *in pair order* (not
sorted): ``{"id", "object": "list", "created", "model", "data": [{"index", "object": "score", "score"}],
"usage"}``. A 1 -> N request is one rerank call; N -> N pairs are N calls — all of one request are ONE
scheduler job (one queue slot, its exact tokens as its cost), so the documented 1,000 pairs fit an idle server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from .engines import RERANK
from .errors import ApiError
from .route import serve
from .state import ServerState
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


def pair_fields(text_1: str | list[str], text_2: str | list[str]) -> Callable[[int, str], str]:
    """The library's field paths of call i -> vLLM's: the query is ``text_1`` (``text_1[i]`` for pairs), a
    document ``text_2[j]`` (``text_2[i]`` for pairs), so an error names the field the client sent."""
    one = isinstance(text_1, str) or len(text_1) == 1
    t1 = "text_1" if isinstance(text_1, str) else "text_1[0]"
    t2_list = not isinstance(text_2, str)

    def rename(i: int, field: str) -> str:
        if field == "query" or field.startswith(("query.", "query[")):
            return (t1 if one else f"text_1[{i}]") + field[len("query"):]
        head, sep, rest = field.partition("]")
        if head.startswith("documents[") and sep:
            j = int(head[len("documents["):]) if one else i
            return (f"text_2[{j}]" if t2_list else "text_2") + rest
        if field == "documents":
            return "text_2"
        return field
    return rename


def check_truncate_prompt_tokens(value: int | None, *, max_length: int) -> None:
    """vLLM's ``truncate_prompt_tokens`` cuts a pair's joined prompt to its first N tokens; for a Qwen3 reranker that
    cuts the end of the template, where the score is read. vlrank does not cut there: it takes -1 (vLLM: the whole
    context) and any N >= the model's ``max_length`` (pairs are at most that long already, so it changes nothing)
    and refuses a smaller N, pointing at the per-text caps that do apply."""
    if value is None or value == -1 or value >= max_length:
        return
    raise ApiError(400, f"truncate_prompt_tokens={value} is below this model's max_length of {max_length} tokens; "
                        "vlrank never cuts a pair's prompt (its end holds the tokens the score is read from): pass "
                        "max_tokens_per_doc / max_tokens_per_query to cap each text, or -1 / no "
                        "truncate_prompt_tokens", param="truncate_prompt_tokens", code="invalid_value")


def add_routes(app: FastAPI, state: ServerState, *, auth: dict[str, Any]) -> None:
    """Register ``POST /score`` and ``POST /v1/score`` on ``app``."""

    async def score(body: ScoreRequest, request: Request) -> Response:
        check_truncate_prompt_tokens(body.truncate_prompt_tokens,
                                     max_length=state.model(body.model, RERANK).engine.model.max_length)
        calls = [{"query": q, "documents": d, "top_n": None, "instruction": None, "return_documents": False,
                  "raw_scores": body.raw_scores, "max_tokens_per_doc": body.max_tokens_per_doc,
                  "max_tokens_per_query": body.max_tokens_per_query} for q, d in pairs(body.text_1, body.text_2)]

        def shape(results: list[dict[str, Any]]) -> dict[str, Any]:
            prompt = sum(r["usage"]["prompt_tokens"] for r in results)
            return {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                    "model": results[0]["model"] if results else body.model,
                    "data": score_items(results, raw_scores=body.raw_scores),
                    "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}

        return await serve(state, request, model=body.model, kind=RERANK, calls=calls,
                           count=sum(len(c["documents"]) for c in calls), count_field="text_2", shape=shape,
                           rename=pair_fields(body.text_1, body.text_2))

    for path in sorted(ROUTES):
        app.post(path, summary="score text pairs (vLLM score API)", openapi_extra=auth,
                 response_model=ScoreResponse, response_model_exclude_none=True,
                 responses={200: {"description": "one score per pair, in pair order"}, **ERROR_RESPONSES})(score)
