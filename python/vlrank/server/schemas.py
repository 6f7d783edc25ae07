"""Request bodies of the HTTP API (IONOS rerank / OpenAI-compatible embeddings), as pydantic models.

Only the outer shape is checked here (types, required fields, unknown keys); the inner structure of a
query / document / input (strings, ``{"text"}``, ``{"content": [parts]}``) is checked by
``vlrank.inputs``, which names the exact JSON path of a fault. Types are strict: ``"5"`` is not a
``top_n`` and ``1`` is not a ``return_documents``; an integral number (``2.0``) is an integer, as in JSON
Schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr


def _integral(value: Any) -> Any:
    """JSON Schema's "integer" includes 1062.0, so the published schema and the server agree only if an
    integral float is taken as that integer; 1.5, true and "5" are still refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Every integer of a request body is range-checked as a number before anything uses it: a 310-digit integer or
# 2**64 is a 400 naming its field, never a value a later conversion overflows on. The 32-bit range (what int32
# clients send) is far above any count the server acts on (max_documents, a model's dimensions, its context).
# It is a validator, not a published "maximum", so the schema's integers stay as the clients generated from it
# know them.
MAX_INT = 2**31 - 1


def _int32(value: Any) -> Any:
    if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        size = f"an integer of {len(str(abs(value)))} digits" if abs(value) >= 10**12 else str(value)
        end = f"at most {MAX_INT}" if value > 0 else f"at least {-MAX_INT - 1}"
        raise ValueError(f"got {size}, out of range; pass an integer {end}")
    return value


def _int(ge: int | None = None, *, integral: bool = False) -> Any:
    """A strict integer >= ``ge`` in the 32-bit range; ``integral``: 2.0 counts as 2 (see ``_integral``)."""
    before = (BeforeValidator(_integral),) if integral else ()
    return Annotated[StrictInt, Field(ge=ge), *before, AfterValidator(_int32)]


PositiveInteger = _int(1, integral=True)  # top_n / dimensions of the IONOS and OpenAI shapes
StrictPositive = _int(1)  # Cohere's and vLLM's integers stay strict JSON integers
AnyInt32 = _int()
PromptTokens = _int(-1)  # vLLM: -1 means the model's whole context

# A query, a document or an embedding input: a string or an object such as {"text": ...} or
# {"content": [{"type": "text", "text": ...}, {"type": "image_url", "image_url": {"url": ...}}]}.
Side = StrictStr | dict[str, Any]


NonNegative = _int(0)

# Long documents (vlrank/tasks/long_documents.py): the same keywords as Reranker.rerank, with its defaults.
_CAP_DOC = ("cap on each document's text in tokens (encoded alone, before the template); longer text is cut "
            "after the N-th token. Images and videos are never cut and do not count")
_CAP_QUERY = "cap on the query's text in tokens, like max_tokens_per_doc"
_TRUNCATE = ('"END" cuts a pair over max_length (or a side over its cap); "NONE" refuses it with a 413 naming '
             "the document or the query")
_LONG = ('"truncate" (default) or "chunk": score a long document as windows of chunk_tokens tokens and keep '
         'the best one (its result gains "chunk": {index, count, start, end}, character offsets)')
_CHUNK = "window size in tokens (default: the largest that fits max_length, or max_tokens_per_doc)"
_OVERLAP = "tokens shared by neighbouring windows (default: 1/8 of the window); below chunk_tokens"
_MAX_CHUNKS = 'most windows per document (default 16, at most 256); past it "END" drops the rest of the text, "NONE" refuses'


class LongDocumentFields(BaseModel):
    """The long-document keywords every rerank shape takes."""

    max_tokens_per_doc: StrictPositive | None = Field(default=None, description=_CAP_DOC)
    max_tokens_per_query: StrictPositive | None = Field(default=None, description=_CAP_QUERY)
    truncate: Literal["END", "NONE"] = Field(default="END", description=_TRUNCATE)
    long_documents: Literal["truncate", "chunk"] = Field(default="truncate", description=_LONG)
    chunk_tokens: StrictPositive | None = Field(default=None, description=_CHUNK)
    chunk_overlap: NonNegative | None = Field(default=None, description=_OVERLAP)
    max_chunks_per_doc: StrictPositive | None = Field(default=None, description=_MAX_CHUNKS)

    def long_document_call(self) -> dict[str, Any]:
        """These fields as Reranker.rerank keyword arguments."""
        return {name: getattr(self, name) for name in LongDocumentFields.model_fields}


class RerankRequest(LongDocumentFields):
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
    raw_scores: StrictBool = Field(default=False, description="add raw_score (the logit; relevance_score = "
                                                              "sigmoid(raw_score)) to each result")


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
    truncate: Literal["END", "START", "NONE"] = Field(
        default="END", description='an input over max_length: "END" cuts its end, "START" the start of its text, '
                                   '"NONE" refuses it with a 413 naming input[i]')
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


class ChunkInfo(BaseModel):
    index: int = Field(description="the winning window (0-based)")
    count: int = Field(description="windows scored for this document")
    start: int = Field(description="character offset of the window's text in the document's text")
    end: int = Field(description="character offset just past it")


class RerankResult(BaseModel):
    index: int = Field(description="position of the document in the request")
    document: dict[str, Any] | None = Field(default=None, description='the echoed document ({"text", '
                                            '"multi_modal"}); only with return_documents')
    relevance_score: float = Field(description="sigmoid of the model's yes-vs-no logit, in [0, 1]")
    raw_score: float | None = Field(default=None, description="the logit itself; only with raw_scores")
    chunk: ChunkInfo | None = Field(default=None, description='the best window; only with long_documents="chunk"')


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    """POST /v1/rerank: the IONOS rerank result (Cohere v1 clients read index / relevance_score / document)."""

    id: str
    object: Literal["list"] = "list"
    model: str
    results: list[RerankResult] = Field(description="best first; top_n of them when given")
    usage: Usage


class CohereV2RerankRequest(LongDocumentFields):
    """POST /v2/rerank (Cohere v2 shape; also accepts vlrank's multimodal documents)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"model": "reranker", "query": "What is the capital of France?",
                      "documents": ["Paris is the capital of France.", "Berlin is the capital of Germany."],
                      "top_n": 1}]
    })

    model: StrictStr = Field(description="id of a served reranker (GET /v1/models)")
    query: Side = Field(description='a string (or vlrank\'s {"content": [parts]})')
    documents: Annotated[list[Side], Field(min_length=1)] = Field(description="the texts (or content objects) to score")
    top_n: StrictPositive | None = Field(default=None, description="keep only the best n results")
    priority: AnyInt32 | None = Field(default=None, description="accepted for compatibility; not applied")
    return_documents: StrictBool = Field(default=False, description="vlrank extension: echo each document")
    raw_scores: StrictBool = Field(default=False, description="vlrank extension: add raw_score (the logit)")
    instruction: StrictStr | None = Field(default=None, description="vlrank extension: task instruction")


class CohereV2RerankResponse(BaseModel):
    id: str
    results: list[RerankResult] = Field(description="best first: index and relevance_score (document / raw_score "
                                                    "only when asked for)")
    meta: dict[str, Any] = Field(description="api_version, billed_units, tokens, warnings")


class ScoreRequest(BaseModel):
    """POST /score and /v1/score (vLLM's score API): text_1 against each text_2, or pairwise."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"model": "reranker", "text_1": "What is the capital of France?",
                      "text_2": ["Paris is the capital of France.", "Berlin is the capital of Germany."]}]
    })

    model: StrictStr = Field(description="id of a served reranker (GET /v1/models)")
    text_1: StrictStr | Annotated[list[StrictStr], Field(min_length=1)] = Field(
        description="one query, or one query per text_2 (pairs)")
    text_2: StrictStr | Annotated[list[StrictStr], Field(min_length=1)] = Field(description="the texts to score")
    raw_scores: StrictBool = Field(default=False, description="vlrank extension: add raw_score (the logit)")
    max_tokens_per_doc: StrictPositive | None = Field(default=None, description=_CAP_DOC + " (each text_2)")
    max_tokens_per_query: StrictPositive | None = Field(default=None, description=_CAP_QUERY + " (text_1)")
    truncate_prompt_tokens: PromptTokens | None = Field(
        default=None,
        description="-1 or at least the model's max_length: accepted, changes nothing (pairs are cut at max_length); "
                    "smaller: 400 (vlrank does not cut a pair's prompt; use max_tokens_per_doc / max_tokens_per_query)")
    user: StrictStr | None = Field(default=None, description="accepted for compatibility; ignored")


class ScoreItem(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float
    raw_score: float | None = None


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreItem] = Field(description="one score per pair, in pair order (not sorted)")
    usage: Usage


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


# ---- TEI (text-embeddings-inference) shapes: tei.py ----------------------------------------------------------
TruncationDirection = Literal["right", "left", "Right", "Left"]
_TRUNCATE_NOTE = ("TEI's truncation: absent or true cuts an input over the model's max_length (at its end, or with "
                  "truncation_direction=left on /embed at the start of its text); false refuses it with a 413 "
                  "naming the input. /rerank cuts at the end only (left is a 400)")


class TeiRerankRequest(BaseModel):
    """POST /rerank (TEI shape): ``query`` against each of ``texts``; the answer is a list, best first."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"query": "What is Deep Learning?", "texts": ["Deep Learning is ...", "Paris is ..."],
                      "return_text": True}]
    })

    query: StrictStr = Field(description="the query")
    texts: Annotated[list[StrictStr], Field(min_length=1)] = Field(description="the texts to score")
    raw_scores: StrictBool = Field(default=False, description="score is the logit instead of its sigmoid")
    return_text: StrictBool = Field(default=False, description="echo each text in its result")
    truncate: StrictBool | None = Field(default=None, description=_TRUNCATE_NOTE)
    truncation_direction: TruncationDirection = Field(default="right", description=_TRUNCATE_NOTE)
    model: StrictStr | None = Field(default=None, description="vlrank extension: a served reranker's id (default: "
                                                              "--tei-default, or the only reranker served)")


class TeiRank(BaseModel):
    index: int = Field(description="position of the text in the request")
    text: str | None = Field(default=None, description="the text; only with return_text")
    score: float = Field(description="sigmoid of the yes-vs-no logit (the logit itself with raw_scores)")


class TeiEmbedParameters(BaseModel):
    """The ``parameters`` object huggingface_hub's ``InferenceClient.feature_extraction`` sends."""

    model_config = ConfigDict(extra="forbid")

    normalize: StrictBool | None = None
    prompt_name: StrictStr | None = None
    truncate: StrictBool | None = None
    truncation_direction: TruncationDirection | None = None
    dimensions: StrictPositive | None = None
    encoding_format: Literal["float"] | None = None


class TeiEmbedRequest(BaseModel):
    """POST /embed (TEI shape): one vector per input, ``[[float]]``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"inputs": ["What is Deep Learning?", "A cat on a sofa."], "normalize": True}]
    })

    inputs: StrictStr | Annotated[list[StrictStr], Field(min_length=1)] = Field(description="a text or a list")
    normalize: StrictBool = Field(default=True, description="the vectors are L2-normalised (the model is trained "
                                                            "for cosine); false is refused")
    truncate: StrictBool | None = Field(default=None, description=_TRUNCATE_NOTE)
    truncation_direction: TruncationDirection = Field(default="right", description=_TRUNCATE_NOTE)
    dimensions: StrictPositive | None = Field(default=None, description="keep the first n dimensions (MRL), "
                                                                       "re-normalised")
    prompt_name: StrictStr | None = Field(default=None, description="no named prompts are configured: refused")
    parameters: TeiEmbedParameters | None = Field(default=None, description="huggingface_hub's envelope: the same "
                                                                           "fields, nested")
    model: StrictStr | None = Field(default=None, description="vlrank extension: a served embedding model's id "
                                                              "(default: --tei-default, or the only one served)")


class TeiErrorResponse(BaseModel):
    """Every non-2xx answer of the TEI routes (TEI's own error body)."""

    error: str
    error_type: Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]


class TeiInfo(BaseModel):
    """GET /info (TEI shape)."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: dict[str, Any] = Field(description='{"embedding": {"pooling": "last_token"}} or {"reranker": '
                                                   '{"id2label", "label2id"}}')
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None = None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None


# ---- Cohere embed (v1 / v2) shapes: cohere_embed.py ----------------------------------------------------------
EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
CohereInputType = Literal["search_query", "search_document", "classification", "clustering", "image"]


class CohereEmbedRequest(BaseModel):
    """POST /v2/embed and /v1/embed (Cohere shape): exactly one of texts, images (data URIs) or inputs."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"model": "embedder", "input_type": "search_document",
                      "texts": ["The food was delicious.", "A cat on a sofa."],
                      "embedding_types": ["float", "int8", "binary"]}]
    })

    model: StrictStr = Field(description="id of a served embedding model (GET /v1/models)")
    input_type: CohereInputType | None = Field(
        default=None, description="picks the instruction: search_query -> \"Retrieve images or text relevant to "
                                  "the user's query.\"; the others -> the model's default (\"Represent the user's "
                                  "input.\")")
    texts: Annotated[list[StrictStr], Field(min_length=1)] | None = Field(default=None, description="texts")
    images: Annotated[list[StrictStr], Field(min_length=1)] | None = Field(
        default=None, description="images as data URIs (data:image/png;base64,...)")
    inputs: Annotated[list[dict[str, Any]], Field(min_length=1)] | None = Field(
        default=None, description='[{"content": [{"type": "text", "text"}, {"type": "image_url", "image_url": '
                                  '{"url"}}]}]: one embedding per input')
    embedding_types: Annotated[list[EmbeddingType], Field(min_length=1)] | None = Field(
        default=None, description="default [\"float\"] (v1: a plain float list when omitted)")
    output_dimension: StrictPositive | None = Field(default=None, description="keep the first n dimensions (MRL)")
    truncate: Literal["NONE", "START", "END"] | None = Field(
        default=None, description="END (default) cuts an input over the model's max_length at its end, "
                                  "START at the start of its text, NONE refuses it (413 naming the input)")
    max_tokens: StrictPositive | None = Field(default=None, description="accepted for compatibility; not applied")
    priority: AnyInt32 | None = Field(default=None, description="accepted for compatibility; not applied")


class CohereEmbedResponse(BaseModel):
    id: str
    embeddings: dict[str, list[Any]] | list[list[float]] = Field(
        description="{type: one entry per input} (v1 without embedding_types: a list of float vectors)")
    texts: list[str]
    meta: dict[str, Any]
    response_type: Literal["embeddings_floats", "embeddings_by_type"] | None = None
