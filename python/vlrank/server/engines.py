"""One engine per task between HTTP requests and a task object (``vlrank.Reranker`` / ``vlrank.Embedder``).

``prepare()`` runs in a request thread: it validates the request under the *server's* fetch policy
(``file://`` and plain paths refused, private addresses refused unless allowed) with ``vlrank.inputs``,
which names the exact JSON path of a fault, and estimates the request's token cost for the scheduler.
``run_batch()`` runs on the model's worker thread: a whole scheduler batch is one model plan
(``rerank_many`` / ``embed_many``, whose result i equals the single call i); a lone request is the
plain public call.
"""

from __future__ import annotations

import base64
import struct
import zlib
import logging
import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from vlrank.errors import ContextTooLongError, InvalidInputError, VlrankError
from vlrank.inputs import FetchPolicy, ParsedInput, parse_documents, parse_embedding_input, parse_query
from vlrank.preprocess.images import count_image_tokens, image_tokens
from vlrank.preprocess.prompts import CONTEXT_TOKENS
from vlrank.tasks import Embedder, Reranker

RERANK, EMBED = "rerank", "embed"
log = logging.getLogger("vlrank.server")

# Cost estimate in tokens: Qwen's BPE averages ~4 UTF-8 bytes per token on English and fewer on other
# scripts; 3 keeps the estimate on the safe (larger) side. Images cost their real token count when the
# native probe is available, else a typical screenshot-sized guess.
_BYTES_PER_TOKEN = 3
_PAIR_OVERHEAD = 48  # system prompt + template tokens around a rerank pair / embedding input
_IMAGE_GUESS = 256


@dataclass(frozen=True)
class Prepared:
    """A validated request: keyword arguments for the facade, estimated tokens, documents/inputs count."""

    payload: dict[str, Any]
    cost: int
    items: int


def _text_tokens(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass")) // _BYTES_PER_TOKEN + 1


def _image_tokens(image: Any, pixels: tuple[int, int]) -> int:
    """Exact prompt tokens of one image (header probe + the reference resize rule) plus its two wrapper
    tokens; a guess when the header cannot be read (the facade then reports the real error)."""
    try:
        if image.data is not None:
            tokens = count_image_tokens(bytes(image.data), min_pixels=pixels[0], max_pixels=pixels[1]).tokens
        else:
            height, width = (int(v) for v in image.array.shape[:2])
            tokens = image_tokens(width=width, height=height, min_pixels=pixels[0], max_pixels=pixels[1])
        return int(tokens) + 2
    except Exception:  # noqa: BLE001 - only an estimate
        return _IMAGE_GUESS


def _images_over_context(tokens: int, *, field: str) -> ContextTooLongError:
    return ContextTooLongError(
        f"{field}: its images alone need {tokens} tokens, over the model's {CONTEXT_TOKENS}-token context; "
        "pass fewer or smaller images", field=field)


def _side_tokens(side: ParsedInput, pixels: tuple[int, int]) -> tuple[int, int]:
    """(text tokens estimate, exact image tokens) of one side."""
    return sum(_text_tokens(t) for t in side.texts), sum(_image_tokens(i, pixels) for i in side.images)



class TaskEngine(abc.ABC):
    """What both engines share: the served task object, the server's fetch policy, the document cap, and
    running a scheduler batch. An engine adds its ``prepare`` (request -> payload + cost), ``_call`` /
    ``_call_many`` (the task's public calls) and its warm-up payloads."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str, model: Any, *, policy: FetchPolicy, max_documents: int) -> None:
        self.name = name
        self.model = model
        self.policy = policy
        self.max_documents = max_documents

    @property
    def _pixels(self) -> tuple[int, int]:
        return self.model.min_pixels, self.model.max_pixels

    def run_batch(self, payloads: Sequence[dict[str, Any]]) -> list[Any]:
        """One model plan for the whole batch; if that plan fails outright (not a typed per-call error),
        each request is retried alone so one bad request cannot fail the others."""
        if len(payloads) > 1:
            try:
                return [self._named(r) for r in self._call_many(list(payloads))]
            except Exception:  # noqa: BLE001 - isolate the culprit below; its own error reaches its client
                log.warning("batched call of %d requests failed; retrying them one by one", len(payloads),
                            exc_info=True)
        return [self._one(p) for p in payloads]

    def _one(self, payload: dict[str, Any]) -> Any:
        try:
            return self._named(self._call(payload))
        except Exception as exc:  # noqa: BLE001 - returned to that request only, not the whole batch
            return exc

    def _named(self, result: Any) -> Any:
        if isinstance(result, dict):
            result["model"] = self.name
        return result

    @abc.abstractmethod
    def prepare(self, **request: Any) -> Prepared:
        """Validate one request under the server's policy and estimate its token cost."""

    @abc.abstractmethod
    def _call(self, payload: dict[str, Any]) -> dict:
        """The task's public call for one prepared payload."""

    @abc.abstractmethod
    def _call_many(self, payloads: list[dict[str, Any]]) -> list[Any]:
        """The task's many-calls form: result i equals ``_call(payloads[i])``, errors in place."""

    @abc.abstractmethod
    def warmup_payloads(self) -> list[dict[str, Any]]:
        """Payloads that load every session of the model (text, then an image) before /health says ready."""


class RerankEngine(TaskEngine):
    """One served reranker."""

    kind = RERANK

    def prepare(self, *, query: Any, documents: Any, top_n: int | None, instruction: str | None,
                return_documents: bool, raw_scores: bool = False) -> Prepared:
        parsed_query = parse_query(query, policy=self.policy)
        parsed_docs = parse_documents(documents, policy=self.policy, max_documents=self.max_documents)
        pixels = self._pixels
        q_text, q_img = _side_tokens(parsed_query, pixels)
        if q_img > CONTEXT_TOKENS:
            raise _images_over_context(q_img, field="query")
        q = q_text + q_img + (_text_tokens(instruction) if instruction else 0) + _PAIR_OVERHEAD
        cost = 0
        for i, doc in enumerate(parsed_docs):
            d_text, d_img = _side_tokens(doc, pixels)
            # Images are never truncated, so image tokens over the context are an error for sure; catching it
            # here keeps a hopeless request from reaching (and exhausting) the model.
            if q_img + d_img > CONTEXT_TOKENS:
                raise _images_over_context(q_img + d_img, field=f"documents[{i}]")
            cost += q + d_text + d_img
        # The task's parse_* return a ParsedInput unchanged, so the server's parse (under the server's
        # policy, in a request thread) is the only one: images are fetched once, never by the model worker.
        payload = {"query": parsed_query, "documents": parsed_docs, "top_n": top_n, "instruction": instruction,
                   "return_documents": return_documents, "raw_scores": raw_scores}
        return Prepared(payload=payload, cost=cost, items=len(parsed_docs))

    def _call(self, payload: dict[str, Any]) -> dict:
        return self.model.rerank(**payload)

    def _call_many(self, payloads: list[dict[str, Any]]) -> list[Any]:
        return self.model.rerank_many(payloads)

    def warmup_payloads(self) -> list[dict[str, Any]]:
        return [
            {"query": "warm up", "documents": [document], "top_n": None, "instruction": None,
             "return_documents": False}
            for document in ("warm up", _WARMUP_IMAGE)
        ]


class EmbedEngine(TaskEngine):
    """One served embedding model."""

    kind = EMBED

    def prepare(self, *, input: Any, messages: Any, instruction: str | None,  # noqa: A002
                dimensions: int | None, encoding_format: str) -> Prepared:
        parsed = parse_embedding_input(input=input, messages=messages, policy=self.policy,
                                       max_inputs=self.max_documents)
        extra = (_text_tokens(instruction) if instruction else 0) + _PAIR_OVERHEAD
        pixels = self._pixels
        cost = 0
        for i, side in enumerate(parsed):
            text, img = _side_tokens(side, pixels)
            if img > CONTEXT_TOKENS:
                field = "input" if len(parsed) == 1 and not isinstance(input, list) else f"input[{i}]"
                raise _images_over_context(img, field="messages" if messages is not None else field)
            cost += text + img + extra
        payload: dict[str, Any] = {"instruction": instruction, "dimensions": dimensions,
                                   "encoding_format": encoding_format}
        # One parsed input stands for a string, one object or a messages list (all give one embedding);
        # a list stays a list, so the response has the same shape as the library's for the raw request.
        payload["input"] = list(parsed) if isinstance(input, list) else parsed[0]
        return Prepared(payload=payload, cost=cost, items=len(parsed))

    def _call(self, payload: dict[str, Any]) -> dict:
        return self.model.embed(**payload)

    def _call_many(self, payloads: list[dict[str, Any]]) -> list[Any]:
        return self.model.embed_many(payloads)

    def warmup_payloads(self) -> list[dict[str, Any]]:
        return [
            {"input": "warm up", "instruction": None, "dimensions": None, "encoding_format": "float"},
            {"input": [_WARMUP_IMAGE], "instruction": None, "dimensions": None, "encoding_format": "float"},
        ]


_ENGINES: tuple[tuple[type, type[TaskEngine]], ...] = ((Reranker, RerankEngine), (Embedder, EmbedEngine))


def engine_class(model: Any) -> type[TaskEngine]:
    """The engine of a task object: ``RerankEngine`` for a ``vlrank.Reranker``, ``EmbedEngine`` for a
    ``vlrank.Embedder`` (subclasses included)."""
    for task_cls, engine_cls in _ENGINES:
        if isinstance(model, task_cls):
            return engine_cls
    raise InvalidInputError(
        f"models: a {type(model).__name__} is neither a vlrank.Reranker nor a vlrank.Embedder; pass one of "
        "them or a ModelSpec", field="models")


def is_warmup_refusal(exc: BaseException) -> bool:
    """A text-only model refusing the warm-up image is expected, not a failure."""
    return isinstance(exc, VlrankError) and isinstance(exc, InvalidInputError)


def _png(width: int, height: int) -> bytes:
    """A small grey RGB PNG, written by hand so warm-up needs no imaging library."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes([(x * 7 + y * 3) % 256 for x in range(width) for _ in range(3)])
                   for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


_WARMUP_PNG_URL = "data:image/png;base64," + base64.b64encode(_png(64, 64)).decode()
_WARMUP_IMAGE = {"content": [{"type": "image_url", "image_url": {"url": _WARMUP_PNG_URL}}]}
