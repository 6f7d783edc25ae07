"""Hugging Face text-embeddings-inference (TEI) routes: ``POST /rerank``, ``POST /embed``, ``GET /info``, ``POST /``.

TEI cannot serve a Qwen3 reranker; these routes let a TEI client (LangChain ``HuggingFaceEndpointEmbeddings``,
LlamaIndex ``TextEmbeddingsInference``, Haystack's TEI components, ``huggingface_hub.InferenceClient``) swap its
URL and get the served Qwen3 models. Shapes follow TEI's router (router/src/http/types.rs):

- ``/rerank``: ``{"query", "texts", "raw_scores", "return_text", "truncate", "truncation_direction"}`` ->
  ``[{"index", "text"?, "score"}]`` best first; ``score`` is the sigmoid of the logit, the logit itself with
  ``raw_scores``.
- ``/embed``: ``{"inputs": str | [str], "normalize", "truncate", "truncation_direction", "dimensions"}`` ->
  ``[[float]]``. The vectors are always L2-normalised (``normalize: false`` is a 400: the model's raw hidden
  state is not what it was trained to compare). huggingface_hub nests the options under ``"parameters"``;
  both spellings are read.
- ``/info``: the model's id, type, max input length (its max_length) and this server's batch limits.
- ``/``: TEI's root route, what a client given the bare base URL posts to (``huggingface_hub.InferenceClient(model=URL)``,
  Haystack's embedders): TEI answers it as its one model's route; here the body says which — ``{"query", "texts"}``
  is ``/rerank``, ``{"inputs"}`` is ``/embed`` (both kinds may be served side by side).
- Errors: TEI's body ``{"error": str, "error_type": "Validation" | "Empty" | "Overloaded" | "Unhealthy" |
  "Backend"}`` with this server's status codes; the message starts with the field at fault.

TEI serves one model; here ``"model"`` in the body (a vlrank extension) picks one, else the server's
``tei_default`` (``vlrank serve --tei-default ID``), else the only model of the route's kind. Truncation: every
input over the model's max_length is cut (``truncate`` absent or true, TEI's ``auto_truncate``) at its end, or on
``/embed`` with ``truncation_direction: left`` at the start of its text; ``truncate: false`` refuses it (413
naming the input), as TEI does.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlrank.errors import VlrankError
from vlrank.version import __version__

from .engines import EMBED, RERANK
from .errors import ApiError, _loc_to_param, body_parse_error, from_vlrank_error, internal_error, validation_error
from .models import ModelSpec, kind_of
from .route import serve
from .schemas import TeiEmbedRequest, TeiErrorResponse, TeiInfo, TeiRank, TeiRerankRequest
from .state import ServerState

ROUTES = frozenset({"/rerank", "/embed", "/info"})  # protected as prefixes
EXACT_ROUTES = frozenset({"/"})  # protected as this exact path only: /health and /metrics stay open

_ERROR_TYPES = {429: "Overloaded", 503: "Unhealthy", 500: "Backend"}
TEI_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": TeiErrorResponse, "description": text} for code, text in {
        400: "invalid request: error names the field (error_type Validation, or Empty for an empty list)",
        401: "missing or wrong bearer key",
        404: "unknown model",
        413: "too many inputs, or a body too large (error_type Validation)",
        429: "the model's queue is full (error_type Overloaded)",
        503: "models are loading or the server is shutting down (error_type Unhealthy)",
    }.items()}


def tei_error(err: ApiError, *, empty: bool = False) -> JSONResponse:
    """``err`` in TEI's error body (status and headers kept)."""
    kind = "Empty" if empty else _ERROR_TYPES.get(err.status, "Validation")
    return JSONResponse({"error": err.message, "error_type": kind}, status_code=err.status, headers=err.headers)


class TeiRoute(APIRoute):
    """A route whose every error (validation included, which FastAPI raises before the endpoint runs) is
    answered in TEI's error body instead of the app's OpenAI-shaped one."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _validation(exc)
            except ApiError as exc:
                return tei_error(exc)
            except VlrankError as exc:
                return tei_error(from_vlrank_error(exc))
            except StarletteHTTPException as exc:
                if exc.status_code == 400 and exc.__cause__ is not None:
                    return tei_error(body_parse_error(exc.__cause__))
                detail = exc.detail if isinstance(exc.detail, str) else "request failed"
                return tei_error(ApiError(exc.status_code, detail, headers=dict(exc.headers or {})))
            except Exception as exc:  # noqa: BLE001 - logged with its traceback; the client gets a plain message
                return tei_error(internal_error(exc))

        return route


def _validation(exc: RequestValidationError) -> JSONResponse:
    """A body FastAPI refused; an empty list (for a ``str | list`` field, pydantic's error for the list branch
    comes second) is TEI's ``Empty``."""
    for error in exc.errors():
        if error.get("type") == "too_short":
            param = _loc_to_param(error.get("loc", ())) or "body"
            return tei_error(ApiError(400, f"{param}: the list is empty; pass at least one item", param=param),
                             empty=True)
    return tei_error(validation_error(exc))


def pick_model(state: ServerState, model: str | None, kind: str) -> str:
    """The model a TEI request means: its ``model``, else the server's ``tei_default``, else the only served
    model of ``kind``; a 400 naming ``model`` when several could be meant."""
    if model is not None:
        return model
    default = state.settings.tei_default
    if default is not None and _kind(state.specs[default]) == kind:
        return default
    names = [name for name, spec in state.specs.items() if _kind(spec) == kind]
    if len(names) == 1:
        return names[0]
    what = "reranker" if kind == RERANK else "embedding model"
    served = ", ".join(names) or "none"
    raise ApiError(400 if names else 404, f"model: this server serves {len(names)} {what}s ({served}); pass "
                   '"model" in the body, or start it with --tei-default ID', param="model",
                   code="model_required" if names else "model_not_found")


def _kind(spec: Any) -> str | None:
    return spec.kind if isinstance(spec, ModelSpec) else kind_of(spec)


def _renamer(library: str, route: str) -> Callable[[int, str], str]:
    """The library's field paths (``documents[3]`` / ``input[3]``) -> TEI's (``texts[3]`` / ``inputs[3]``)."""
    def rename(_: int, field: str) -> str:
        return route + field[len(library):] if field.startswith(library) else field
    return rename


def add_routes(app: FastAPI, state: ServerState, *, auth: dict[str, Any]) -> None:
    """Register TEI's ``/rerank``, ``/embed`` and ``/info`` on ``app``."""
    router = APIRouter(route_class=TeiRoute, tags=["TEI"])

    @router.post("/rerank", summary="score texts against a query (Hugging Face TEI rerank)", openapi_extra=auth,
                 response_model=list[TeiRank], response_model_exclude_none=True,
                 responses={200: {"description": "one result per text, best first"}, **TEI_ERRORS})
    async def rerank(body: TeiRerankRequest, request: Request) -> Response:
        if body.truncate is not False and body.truncation_direction.lower() == "left":
            raise ApiError(400, "truncation_direction: left is not served for reranking (a pair is cut at its "
                                "document's end); send right, or truncate: false to refuse long pairs",
                           param="truncation_direction", code="invalid_value")
        call = {"query": body.query, "documents": body.texts, "top_n": None, "instruction": None,
                "return_documents": False, "raw_scores": body.raw_scores,
                "truncate": "NONE" if body.truncate is False else "END"}

        def shape(results: list[dict[str, Any]]) -> Any:
            key = "raw_score" if body.raw_scores else "relevance_score"
            return [{"index": r["index"], **({"text": body.texts[r["index"]]} if body.return_text else {}),
                     "score": r[key]} for r in results[0]["results"]]

        return await serve(state, request, model=pick_model(state, body.model, RERANK), kind=RERANK,
                           calls=[call], count=len(body.texts), count_field="texts", shape=shape,
                           rename=_renamer("documents", "texts"), noun="texts")

    @router.post("/embed", summary="embed texts (Hugging Face TEI embed)", openapi_extra=auth,
                 response_model=list[list[float]],
                 responses={200: {"description": "one L2-normalised vector per input, in input order"},
                            **TEI_ERRORS})
    async def embed(body: TeiEmbedRequest, request: Request) -> Response:
        options = {name: getattr(body, name) for name in body.model_fields_set}
        if body.parameters is not None:  # huggingface_hub's envelope; a top-level field wins
            nested = {k: v for k, v in body.parameters.model_dump().items() if v is not None}
            options = {**nested, **options}
        if options.get("normalize") is False:
            raise ApiError(400, "normalize: false is not served: Qwen3 embeddings are L2-normalised (the model is "
                                "trained for cosine similarity); send normalize: true or leave it out",
                           param="normalize", code="invalid_value")
        if options.get("prompt_name") is not None:
            raise ApiError(400, f"prompt_name: {options['prompt_name']!r} names no prompt (this server has no "
                                "named prompts); leave it out", param="prompt_name", code="invalid_value")
        truncate = options.get("truncate")
        direction = str(options.get("truncation_direction") or "right").lower()
        call = {"input": body.inputs, "dimensions": options.get("dimensions"),
                "truncate": "NONE" if truncate is False else ("START" if direction == "left" else "END")}

        def shape(results: list[dict[str, Any]]) -> Any:
            return [d["embedding"] for d in results[0]["data"]]

        count = len(body.inputs) if isinstance(body.inputs, list) else 1
        return await serve(state, request, model=pick_model(state, body.model, EMBED), kind=EMBED, calls=[call],
                           count=count, count_field="inputs", shape=shape, rename=_renamer("input", "inputs"),
                           noun="inputs", count_code="too_many_inputs")

    @router.post("/", summary="TEI's root route: /rerank for a {query, texts} body, /embed for an {inputs} body",
                 openapi_extra={**auth, "requestBody": {"required": True, "content": {"application/json": {
                     "schema": {"oneOf": [{"$ref": "#/components/schemas/TeiRerankRequest"},
                                          {"$ref": "#/components/schemas/TeiEmbedRequest"}]}}}}},
                 responses={200: {"description": "what /rerank or /embed answers"}, **TEI_ERRORS})
    async def root(request: Request) -> Response:
        try:
            raw = await request.json()
        except ValueError as exc:
            raise ApiError(400, "body: not valid JSON; send TEI's /rerank body {\"query\", \"texts\"} or its /embed "
                                "body {\"inputs\"}", param="body", code="invalid_json") from exc
        if isinstance(raw, dict) and "query" in raw:
            schema, endpoint = TeiRerankRequest, rerank
        elif isinstance(raw, dict) and "inputs" in raw:
            schema, endpoint = TeiEmbedRequest, embed
        else:
            raise ApiError(400, "body: POST / takes TEI's /rerank body {\"query\", \"texts\"} or its /embed body "
                                "{\"inputs\"}", param="body", code="invalid_value")
        try:
            body = schema.model_validate(raw)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from exc
        return await endpoint(body, request)

    @router.get("/info", summary="the model a TEI client talks to (Hugging Face TEI info)", openapi_extra=auth,
                response_model=TeiInfo, responses={200: {"description": "model and limits"}, **TEI_ERRORS})
    async def info(model: str | None = None) -> dict[str, Any]:
        name = model if model is not None else state.settings.tei_default or next(iter(state.specs))
        if name not in state.specs:
            raise ApiError(404, f"model {name!r} is not served here (served: {', '.join(state.specs)})",
                           param="model", code="model_not_found")
        kind = _kind(state.specs[name]) or (state.models[name].kind if name in state.models else EMBED)
        task = state.model(name, kind).engine.model
        model_type = ({"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}} if kind == RERANK
                      else {"embedding": {"pooling": "last_token"}})
        settings = state.settings
        return {"model_id": name, "model_sha": None, "model_dtype": task.runner.manifest.precision,
                "model_type": model_type, "max_concurrent_requests": settings.max_queue,
                "max_input_length": task.max_length, "max_batch_tokens": settings.max_batch_tokens,
                "max_batch_requests": settings.max_batch_requests, "max_client_batch_size": settings.max_documents,
                "auto_truncate": True, "tokenization_workers": 1, "version": __version__, "sha": None,
                "docker_label": None}

    app.include_router(router)
