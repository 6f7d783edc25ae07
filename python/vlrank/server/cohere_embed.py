"""Cohere's embed API (``POST /v2/embed`` and ``POST /v1/embed``) over the served embedding models.

A request sends exactly one of ``texts``, ``images`` (data URIs) or ``inputs`` (``[{"content": [{"type":
"text", "text"}, {"type": "image_url", "image_url": {"url"}}]}]``, one embedding per input). It is ONE library
call (float vectors, ``output_dimension`` as ``dimensions=``); each of ``embedding_types`` is then made from the
same float vectors with the library's scheme (``vlrank.tasks.quantize_out``), so ``int8`` here equals
``Embedder.embed(..., output_type="int8")`` exactly and asking for four types costs one model run.

``input_type`` picks the instruction, as the official Qwen3-VL-Embedding code does: a query is embedded with its
retrieval instruction, everything else with the model's default (the official code's ``"Represent the user's
input."``; Qwen3-VL-Embedding has no separate classification / clustering / image instructions):

    search_query     -> "Retrieve images or text relevant to the user's query"
    search_document  -> the model's default instruction
    classification   -> the model's default instruction
    clustering       -> the model's default instruction
    image            -> the model's default instruction

Answers: v2 ``{"id", "embeddings": {type: [...]}, "texts", "meta"}`` (default type ``float``); v1 the same with
``"response_type": "embeddings_by_type"``, or ``"embeddings_floats"`` and a plain list of float vectors when
``embedding_types`` is left out. ``truncate`` (NONE / START / END) is the library's (END when absent);
``max_tokens`` and ``priority`` are accepted, not applied, and ``meta.warnings`` says so when they are sent.
Errors are this server's JSON error body (as on /v2/rerank), ``param`` naming the Cohere field.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from vlrank.tasks.quantize_out import as_json, quantize, raw_bytes

from .engines import EMBED
from .errors import ApiError
from .route import serve
from .schemas import ERROR_RESPONSES, CohereEmbedRequest, CohereEmbedResponse
from .state import ServerState

ROUTES = frozenset({"/v2/embed", "/v1/embed"})

QUERY_INSTRUCTION = "Retrieve images or text relevant to the user's query"
INSTRUCTIONS: dict[str, str | None] = {"search_query": QUERY_INSTRUCTION, "search_document": None,
                                       "classification": None, "clustering": None, "image": None}
"""Cohere input_type -> the instruction (None: the model's default, "Represent the user's input.")."""

SOURCES = ("texts", "images", "inputs")


def embed_inputs(body: CohereEmbedRequest) -> tuple[str, list[Any]]:
    """(the Cohere field the inputs came from, the library's inputs); exactly one source, else a 400."""
    given = [name for name in SOURCES if getattr(body, name) is not None]
    if len(given) != 1:
        why = "none of them was sent" if not given else f"{' and '.join(given)} were sent together"
        raise ApiError(400, f"{given[1] if len(given) > 1 else 'texts'}: pass exactly one of texts, images or "
                            f"inputs ({why})", param=given[1] if len(given) > 1 else "texts", code="invalid_value")
    source = given[0]
    items: list[Any] = list(getattr(body, source))
    if source == "images":
        items = [{"content": [{"type": "image_url", "image_url": {"url": url}}]} for url in items]
    return source, items


def _renamer(source: str) -> Callable[[int, str], str]:
    """The library's ``input[i]...`` -> ``texts[i]...`` / ``inputs[i]...`` (an image is the string
    ``images[i]`` itself: the part it was wrapped in is ours, not the client's); ``dimensions`` ->
    ``output_dimension``."""
    def rename(_: int, field: str) -> str:
        if field == "dimensions":
            return "output_dimension"
        if not field.startswith("input"):
            return field
        rest = field[len("input"):]
        if source == "images" and rest.startswith("["):
            return "images" + rest[: rest.index("]") + 1]
        return source + rest
    return rename


def embeddings_by_type(vectors: list[Any], types: list[str]) -> dict[str, list[Any]]:
    """{type: one entry per vector}: the library's output types, and ``base64`` (float32 bytes, little-endian)."""
    floats = [np.asarray(v, dtype=np.float32) for v in vectors]
    out: dict[str, list[Any]] = {}
    for kind in dict.fromkeys(types):  # a type asked for twice is answered once
        if kind == "base64":
            out[kind] = [base64.b64encode(raw_bytes(v)).decode("ascii") for v in floats]
        else:
            out[kind] = [as_json(quantize(v, kind)) for v in floats]
    return out


def _warnings(body: CohereEmbedRequest) -> list[str]:
    out = []
    out += [f"{name} is not applied by vlrank" for name in ("max_tokens", "priority") if getattr(body, name) is not None]
    return out


def add_routes(app: FastAPI, state: ServerState, *, auth: dict[str, Any]) -> None:
    """Register ``POST /v2/embed`` and ``POST /v1/embed`` on ``app``."""

    def route(version: str) -> Callable[..., Any]:
        async def embed(body: CohereEmbedRequest, request: Request) -> Response:
            source, items = embed_inputs(body)
            instruction = INSTRUCTIONS[body.input_type] if body.input_type is not None else None
            call = {"input": items, "instruction": instruction, "dimensions": body.output_dimension,
                    "truncate": body.truncate or "END"}
            warnings = _warnings(body)

            def shape(results: list[dict[str, Any]]) -> dict[str, Any]:
                result = results[0]
                vectors = [d["embedding"] for d in result["data"]]
                tokens = result["usage"]["prompt_tokens"]
                meta: dict[str, Any] = {"api_version": {"version": version},
                                        "billed_units": {"input_tokens": tokens}}
                if warnings:
                    meta["warnings"] = warnings
                out: dict[str, Any] = {"id": uuid.uuid4().hex, "texts": list(body.texts or []), "meta": meta}
                if version == "1" and body.embedding_types is None:
                    out.update(embeddings=vectors, response_type="embeddings_floats")
                else:
                    out["embeddings"] = embeddings_by_type(vectors, body.embedding_types or ["float"])
                    if version == "1":
                        out["response_type"] = "embeddings_by_type"
                return out

            return await serve(state, request, model=body.model, kind=EMBED, calls=[call], count=len(items),
                               count_field=source, shape=shape, rename=_renamer(source), noun="inputs",
                               count_code="too_many_inputs")
        return embed

    for version in ("2", "1"):
        app.post(f"/v{version}/embed", summary=f"embed texts and images (Cohere embed v{version})",
                 openapi_extra=auth, response_model=CohereEmbedResponse, response_model_exclude_none=True,
                 responses={200: {"description": "embeddings by type, one entry per input in input order"},
                            **ERROR_RESPONSES})(route(version))
