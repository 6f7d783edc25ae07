"""One engine per task between HTTP requests and a task object (``vlrank.Reranker`` / ``vlrank.Embedder``).

``prepare()`` runs in the request's thread (or on the event loop for a small text-only body): it parses the
request's calls under the *server's* fetch policy (``file://`` and plain paths refused, private addresses
refused unless allowed), which names the exact JSON path of a fault, then has the task prepare each call —
media fetched, probed and decoded, prompt ids built — so the request's cost is exact (its prompt tokens,
videos included) and a bad input fails its own request there, never a batch it would have shared.
Decoded pixel rows are reserved in the server's ``MediaBudget`` before they are made, and released when the
request's job is done.

``run_batch()`` runs on the model's worker thread: the calls of every request of a scheduler batch are ONE
model plan (``Task.run_prepared``); nothing is parsed or decoded there.
"""

from __future__ import annotations

import abc
import base64
import logging
import struct
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vlrank.errors import InvalidInputError, MemoryBudgetError, VlrankError
from vlrank.inputs import FetchPolicy, parse_documents, parse_embedding_input, parse_query
from vlrank.tasks import Embedder, Reranker
from vlrank.tasks.base import Prepared

from .memory import trim

RERANK, EMBED = "rerank", "embed"
log = logging.getLogger("vlrank.server")


class MediaBusyError(Exception):
    """The media budget stayed full for longer than a request may wait for it (the server answers 503)."""


class MediaBudget:
    """Bytes of decoded pixel rows that prepared requests may hold at once (waiting in the queue or running).

    A request reserves its exact pixel bytes after its prompt ids passed and before anything is decoded; it
    waits (in its own thread, never on the event loop) up to ``wait_s`` for others to finish, then gets 503.
    One request over the whole budget can never fit: ``MemoryBudgetError`` (413) at once."""

    def __init__(self, limit: int, *, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.used = 0
        self._cond = threading.Condition()

    def reserve(self, nbytes: int, *, field: str) -> None:
        if nbytes > self.limit:
            raise MemoryBudgetError(
                f"{field}: its images and videos decode to {nbytes / 2**20:.0f} MiB of pixel rows, over this "
                f"server's media budget of {self.limit / 2**20:.0f} MiB; pass fewer or smaller images, fewer "
                "frames (max_frames, fps) or a lower max_pixels / total_pixels", field=field)
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + nbytes <= self.limit, timeout=self.wait_s):
                raise MediaBusyError(f"the server's media budget stayed full for {self.wait_s:g} s")
            self.used += nbytes

    def release(self, nbytes: int) -> None:
        if nbytes:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


@dataclass(eq=False)
class PreparedRequest:
    """A request's calls, each prepared by the task (rows ready to run), and what the scheduler needs."""

    calls: list[Prepared]
    budget: MediaBudget | None = None
    media_bytes: int = 0
    _released: bool = field(default=False, repr=False)

    @property
    def cost(self) -> int:
        """Exact prompt tokens of every row of every call: the unit of the scheduler's batch budget."""
        return sum(p.tokens for p in self.calls)

    @property
    def items(self) -> int:
        return sum(len(p.rows) for p in self.calls)

    def reserve(self, nbytes: int, *, field: str) -> None:
        if self.budget is not None and nbytes:
            self.budget.reserve(nbytes, field=field)
            self.media_bytes += nbytes

    def release(self) -> None:
        """Give the request's pixel bytes back (idempotent: called when its job is done, or it failed)."""
        if not self._released and self.budget is not None:
            self._released = True
            self.budget.release(self.media_bytes)


Rename = Callable[[int, str], str]
"""(call index, the library's field path) -> the API's field path (e.g. /score: documents[0] -> text_2[3])."""


def renamed(exc: VlrankError, i: int, rename: Rename | None) -> VlrankError:
    """``exc`` with its field (and the field at the head of its message) in the route's own names."""
    if rename is None or not exc.field:
        return exc
    new = rename(i, exc.field)
    if new == exc.field:
        return exc
    message = exc.message
    if message.startswith(exc.field):
        message = new + message[len(exc.field):]
    out = type(exc)(message, field=new)
    out.__cause__ = exc
    return out


class TaskEngine(abc.ABC):
    """What both engines share: the served task object, the server's fetch policy, the document cap, preparing
    a request's calls and running a scheduler batch. An engine adds ``parse`` (one call's request fields ->
    the task's keyword arguments, under the server's policy) and its warm-up calls."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str, model: Any, *, policy: FetchPolicy, max_documents: int,
                 media: MediaBudget | None = None) -> None:
        self.name = name
        self.model = model
        self.policy = policy
        self.max_documents = max_documents
        self.media = media

    def prepare(self, calls: Sequence[Mapping[str, Any]], *, rename: Rename | None = None) -> PreparedRequest:
        """Every call of one request prepared (see the module docstring); the first bad call's typed error,
        in the route's field names, fails the request and releases what it reserved."""
        request = PreparedRequest(calls=[], budget=self.media)
        try:
            for i, call in enumerate(calls):
                try:
                    def reserve(nbytes: int, i: int = i) -> None:
                        request.reserve(nbytes, field=rename(i, "documents") if rename else self.items_field)
                    request.calls.append(self.model.prepare(reserve=reserve, **self.parse(**call)))
                except VlrankError as exc:
                    raise renamed(exc, i, rename) from exc.__cause__
        except BaseException:
            request.release()
            raise
        return request

    def run_batch(self, requests: Sequence[PreparedRequest]) -> list[Any]:
        """One model plan for the calls of every request; request i gets its calls' results (a list) or the
        first call error. If the plan fails outright (not a typed per-call error), each request is run alone
        so one cannot fail the others."""
        try:
            return self._run(requests)
        finally:
            if any(r.media_bytes for r in requests):
                trim()

    def _run(self, requests: Sequence[PreparedRequest]) -> list[Any]:
        if len(requests) > 1:
            try:
                flat = self.model.run_prepared([p for r in requests for p in r.calls])
                out, k = [], 0
                for r in requests:
                    out.append(self._answer(flat[k:k + len(r.calls)]))
                    k += len(r.calls)
                return out
            except Exception:  # noqa: BLE001 - isolate the culprit below; its own error reaches its client
                log.warning("batched call of %d requests failed; running them one by one", len(requests),
                            exc_info=True)
        return [self._one(r) for r in requests]

    def _one(self, request: PreparedRequest) -> Any:
        try:
            return self._answer(self.model.run_prepared(request.calls))
        except Exception as exc:  # noqa: BLE001 - returned to that request only, not the whole batch
            return exc

    def _answer(self, results: Sequence[Any]) -> Any:
        for r in results:
            if isinstance(r, BaseException):
                return r
            r["model"] = self.name
        return list(results)

    items_field: ClassVar[str] = ""

    @abc.abstractmethod
    def parse(self, **call: Any) -> dict[str, Any]:
        """One call's request fields -> the task's keyword arguments, parsed under the server's policy."""

    @abc.abstractmethod
    def warmup_calls(self) -> list[dict[str, Any]]:
        """Calls that load every session of the model (text, then an image) before /health says ready."""


class RerankEngine(TaskEngine):
    """One served reranker."""

    kind = RERANK
    items_field = "documents"

    def parse(self, *, query: Any, documents: Any, top_n: int | None = None, instruction: str | None = None,
              return_documents: bool = True, raw_scores: bool = False, **long_documents: Any) -> dict[str, Any]:
        # long_documents: Reranker.rerank's long-document keywords, passed through as they are.
        # The task's parse_* return a ParsedInput unchanged, so this parse (under the server's policy) is the
        # only one: media are fetched once, in the request's thread.
        return {"query": parse_query(query, policy=self.policy),
                "documents": parse_documents(documents, policy=self.policy, max_documents=self.max_documents),
                "top_n": top_n, "instruction": instruction, "return_documents": return_documents,
                "raw_scores": raw_scores, **long_documents}

    def warmup_calls(self) -> list[dict[str, Any]]:
        return [{"query": "warm up", "documents": [document], "return_documents": False}
                for document in ("warm up", _WARMUP_IMAGE)]


class EmbedEngine(TaskEngine):
    """One served embedding model."""

    kind = EMBED
    items_field = "input"

    def parse(self, *, input: Any, messages: Any = None, instruction: str | None = None,  # noqa: A002
              dimensions: int | None = None, encoding_format: str = "float", **options: Any) -> dict[str, Any]:
        parsed = parse_embedding_input(input=input, messages=messages, policy=self.policy,
                                       max_inputs=self.max_documents)
        # One parsed input stands for a string, one object or a messages list (all give one embedding);
        # a list stays a list, so the response has the same shape as the library's for the raw request.
        return {"input": list(parsed) if isinstance(input, list) else parsed[0], "instruction": instruction,
                "dimensions": dimensions, "encoding_format": encoding_format, **options}

    def warmup_calls(self) -> list[dict[str, Any]]:
        return [{"input": "warm up"}, {"input": [_WARMUP_IMAGE]}]


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
