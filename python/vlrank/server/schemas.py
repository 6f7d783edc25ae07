"""Request bodies of the HTTP API (IONOS rerank / OpenAI-compatible embeddings), as pydantic models.

Only the outer shape is checked here (types, required fields, unknown keys); the inner structure of a
query / document / input (strings, ``{"text"}``, ``{"content": [parts]}``) is checked by
``vlrank.inputs``, which names the exact JSON path of a fault. Types are strict: ``"5"`` is not a
``top_n`` and ``1`` is not a ``return_documents``; an integral number (``2.0``) is an integer, as in JSON
Schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr


def _integral(value: Any) -> Any:
    """JSON Schema's "integer" includes 1062.0, so the published schema and the server agree only if an
    integral float is taken as that integer; 1.5, true and "5" are still refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


PositiveInteger = Annotated[StrictInt, Field(ge=1), BeforeValidator(_integral)]

# A query, a document or an embedding input: a string or an object such as {"text": ...} or
# {"content": [{"type": "text", "text": ...}, {"type": "image_url", "image_url": {"url": ...}}]}.
Side = StrictStr | dict[str, Any]


class RerankRequest(BaseModel):
    """POST /v1/rerank (IONOS AI Model Hub shape)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{
            "model": "reranker",
            "query": "What is the capital of France?",
            "documents": ["Paris is the capital of France.", "Berlin is the capital of Germany."],
            "top_n": 2,
        }]
    })

    model: StrictStr = Field(description="id of a served reranker (GET /v1/models)")
    query: Side = Field(description='a string, {"text": ...} or {"content": [parts]}')
    documents: Annotated[list[Side], Field(min_length=1)] | dict[str, Any] = Field(
        description='the candidates to score: a list of strings / objects (or vLLM\'s {"content": [parts]}, '
                    "one document per part)")
    top_n: PositiveInteger | None = Field(default=None, description="keep only the best n results")
    instruction: StrictStr | None = Field(default=None, description="task instruction (default: the model's)")
    return_documents: StrictBool = Field(default=True, description="echo each document in its result")


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings (OpenAI / IONOS shape, plus multimodal inputs and ``messages``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"model": "embedder", "input": ["The food was delicious.", "A cat on a sofa."]}]
    })

    model: StrictStr = Field(description="id of a served embedding model (GET /v1/models)")
    input: StrictStr | list[Side] | dict[str, Any] | None = Field(
        default=None, description="a string, a list of strings / objects, or one object; or use messages")
    messages: list[dict[str, Any]] | None = Field(
        default=None, description='[{"role": "user", "content": [parts]}]: all messages form ONE input')
    instruction: StrictStr | None = Field(default=None, description="task instruction (default: the model's)")
    dimensions: PositiveInteger | None = Field(default=None, description="keep the first n dimensions (MRL)")
    encoding_format: Literal["float", "base64"] = Field(default="float")
    user: StrictStr | None = Field(default=None, description="accepted for OpenAI compatibility; ignored")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every non-2xx answer."""

    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    type: Literal["rerank", "embedding"]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "invalid request (error.param names the field)",
        401: "missing or wrong bearer key",
        404: "unknown model",
        413: "body too large, too many documents, or a prompt longer than the context",
        429: "the model's queue is full; retry after Retry-After seconds",
        500: "internal error (details in the server log)",
        503: "models are still loading, or the server is shutting down; retry after Retry-After seconds",
    }.items()
}
