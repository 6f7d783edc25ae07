"""``vlrank.Reranker``: IONOS-shaped reranking over an exported (or exported-on-first-use) model.

A call runs in three steps, so image work plugs in without touching the rest:
  prepare  inputs -> parsed sides -> (images preprocessed once) -> prompt ids per pair   (``_prepare``)
  model    all rows of the call(s) through one token-budgeted batch plan                 (ModelRunner.run)
  result   scores -> sorted IONOS results + usage                                         (``_result``)
"""

from __future__ import annotations

import math
import numbers
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlrank import _native
from vlrank.errors import InvalidInputError, VlrankError
from vlrank.inputs import FetchPolicy
from vlrank.inputs import ParsedInput, parse_documents, parse_query
from vlrank.runtime import DEFAULT_BATCH_TOKENS, ModelRunner, Row

_RERANK_ARGS = frozenset({"query", "documents", "top_n", "instruction", "return_documents"})


def check_pixels(min_pixels: Any, max_pixels: Any) -> tuple[int, int]:
    for value, fld in ((min_pixels, "min_pixels"), (max_pixels, "max_pixels")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{fld}={value!r}; pass a positive number of pixels (e.g. 4096)", field=fld)
    if min_pixels > max_pixels:
        raise InvalidInputError(f"min_pixels={min_pixels} is larger than max_pixels={max_pixels}; pass "
                                "min_pixels <= max_pixels", field="min_pixels")
    return min_pixels, max_pixels


def check_max_length(max_length: Any, *, default: int, context: int) -> int:
    if max_length is None:
        return default
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= context:
        # (QA fix) the pre-load check passes default=0, which read "(or None for the default 0)".
        hint = f"the default {default}" if default > 0 else "the model's default"
        raise InvalidInputError(
            f"max_length={max_length!r}; pass an integer from 1 to the model's context of {context} tokens "
            f"(or None for {hint})",
            field="max_length",
        )
    return max_length


def as_int(value: Any) -> Any:
    """(QA fix) numpy integers (np.int64(5)) are integers too: they used to be refused with "pass an integer".
    Returns a plain int for any integral non-bool value, else the value unchanged (for the caller's check)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def check_calls(calls: Any, *, method: str) -> Sequence[Any]:
    """(QA fix) ``rerank_many(5)`` raised TypeError and ``rerank_many("ab")`` ran one bad call per character."""
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        raise InvalidInputError(f"calls: expected a list of {method}() keyword-argument mappings, got "
                                f"{type(calls).__name__}; pass e.g. [{{...}}, {{...}}]", field="calls")
    return calls


def check_instruction(instruction: Any) -> str | None:
    if instruction is not None and not isinstance(instruction, str):
        raise InvalidInputError(f"instruction: expected a string or None, got {type(instruction).__name__}",
                                field="instruction")
    return instruction


@dataclass
class _Prepared:
    documents: list[ParsedInput]
    rows: list[Row]
    top_n: int | None
    return_documents: bool


class ModelFacade:
    """What ``Reranker`` and ``Embedder`` share: argument checks, the loaded model (``ModelRunner``), the
    per-call image cache. Subclasses set ``task`` and add their public call."""

    task = ""

    def __init__(self, model: str | Path, *, max_length: int | None = None, min_pixels: int = 4096,
                 max_pixels: int = 1310720, providers=None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 name: str | None = None, fetch_policy: FetchPolicy | None = None,
                 ort_options: Mapping[str, str] | None = None) -> None:
        self.min_pixels, self.max_pixels = check_pixels(min_pixels, max_pixels)
        if fetch_policy is not None and not isinstance(fetch_policy, FetchPolicy):
            raise InvalidInputError("fetch_policy: pass a vlrank.FetchPolicy or None", field="fetch_policy")
        self.fetch_policy = fetch_policy
        if max_length is not None:  # fail before loading anything
            check_max_length(max_length, default=0, context=_native.CONTEXT_TOKENS)
        self.runner = ModelRunner(model, task=self.task, providers=providers, batch_tokens=batch_tokens,
                                  ort_options=ort_options)
        m = self.runner.manifest
        self.max_length = check_max_length(max_length, default=m.max_length,
                                           context=int(m.data.get("context_length", 32768)))
        self.name = name or m.name
        self.family = m.family

    @property
    def max_batch_tokens(self) -> int:
        return self.runner.batch_tokens

    def _image_batch(self):
        return self.runner.image_batch(min_pixels=self.min_pixels, max_pixels=self.max_pixels)


class Reranker(ModelFacade):
    """Score documents against a query with Qwen3-VL-Reranker or Qwen3-Reranker.

    ``model``: a directory written by ``vlrank export``, a Hugging Face checkpoint directory (exported
    once into ``$VLRANK_CACHE`` or ~/.cache/vlrank) or a hub id. ``providers``: None/"auto", "cpu",
    "cuda" or ONNX Runtime provider names. ``batch_tokens``: rows × longest prompt per decoder run.
    ``ort_options``: ONNX Runtime session config entries for every session of the model (e.g.
    ``{"session.intra_op.allow_spinning": "0"}`` in a server).
    """

    task = "rerank"

    # ---- public API -------------------------------------------------------------------------------------
    def rerank(self, query: Any, documents: Any, *, top_n: int | None = None, instruction: str | None = None,
               return_documents: bool = True) -> dict:
        """IONOS rerank result: ``{"id", "object": "list", "model", "results": [{"index", "document",
        "relevance_score"}], "usage": {"prompt_tokens", "total_tokens"}}``, results best first."""
        images = self._image_batch()
        prepared = self._prepare(query, documents, top_n=top_n, instruction=instruction,
                                 return_documents=return_documents, images=images)
        outputs = self.runner.run(prepared.rows, images)
        return self._result(prepared, outputs)

    def rerank_many(self, calls: Sequence[Mapping[str, Any]]) -> list[dict | VlrankError]:
        """Many rerank calls through one batch plan; result i equals ``rerank(**calls[i])`` (ids aside), a
        bad call yields its typed error in place."""
        calls = check_calls(calls, method="rerank")
        images = self._image_batch()
        prepared: list[_Prepared | VlrankError] = []
        for i, call in enumerate(calls):
            try:
                if not isinstance(call, Mapping) or not set(call) <= _RERANK_ARGS:
                    raise InvalidInputError(f"calls[{i}]: pass a mapping of rerank() keyword arguments "
                                            f"({', '.join(sorted(_RERANK_ARGS))})", field=f"calls[{i}]")
                args = dict(call)
                prepared.append(self._prepare(args.pop("query", None), args.pop("documents", None), images=images,
                                              **args))
            except VlrankError as exc:
                prepared.append(exc)
        return self.runner.run_calls(prepared, images, self._result)

    # ---- steps ----------------------------------------------------------------------------------------------

    def _prepare(self, query: Any, documents: Any, *, top_n: int | None = None, instruction: str | None = None,
                 return_documents: bool = True, images=None) -> _Prepared:
        top_n = as_int(top_n)
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise InvalidInputError(f"top_n={top_n!r}; pass a positive integer (or None for every document)",
                                    field="top_n")
        if not isinstance(return_documents, bool):
            raise InvalidInputError("return_documents: pass True or False", field="return_documents")
        instruction = check_instruction(instruction)
        q = parse_query(query, policy=self.fetch_policy)
        docs = parse_documents(documents, policy=self.fetch_policy)
        tok = self.runner.tokenizer
        if self.family == "qwen3":
            for side, fld in [(q, "query")] + [(d, f"documents[{i}]") for i, d in enumerate(docs)]:
                if side.images:
                    raise InvalidInputError(f"{fld}: this is a text reranker (Qwen3-Reranker); pass text only, or "
                                            "use a Qwen3-VL-Reranker model for images", field=fld)
            ids = _native.build_text_rerank_ids_batch(tok, query="".join(q.texts),
                                                      documents=["".join(d.texts) for d in docs],
                                                      instruction=instruction, max_length=self.max_length)
            rows = [Row(list(r)) for r in ids]
        else:
            q_imgs, *d_imgs = self._prepare_images([q, *docs], images)
            # (vision hook) multimodal.vl_rerank_ids = build_vl_rerank_ids_batch + context errors that name
            # the document, the tokens it needs and a max_pixels that fits.
            from vlrank.multimodal import vl_rerank_ids

            ids = vl_rerank_ids(tok, query=q, documents=docs, query_images=q_imgs, doc_images=d_imgs,
                                instruction=instruction, max_length=self.max_length,
                                min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            rows = [Row(list(r), q_imgs + di) for r, di in zip(ids, d_imgs)]
        return _Prepared(docs, rows, top_n, return_documents)

    @staticmethod
    def _prepare_images(sides: list[ParsedInput], images) -> list[list]:
        if not any(s.images for s in sides):
            return [[] for _ in sides]
        if images is None:
            raise InvalidInputError("this model directory has no vision graph, so it cannot score images; "
                                    "re-export the Qwen3-VL checkpoint with this vlrank", field="documents")
        return images.prepare(sides)

    def _result(self, p: _Prepared, outputs: np.ndarray) -> dict:
        scores = [self._score(o) for o in outputs]
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        if p.top_n is not None:
            order = order[: p.top_n]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": i}
            if p.return_documents:
                item["document"] = p.documents[i].echo
            item["relevance_score"] = scores[i]
            results.append(item)
        tokens = sum(len(r.ids) for r in p.rows)
        return {
            "id": f"rerank-{uuid.uuid4().hex}",
            "object": "list",
            "model": self.name,
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _score(self, out: np.ndarray) -> float:
        if self.family == "qwen3":  # softmax([no, yes])[1] = sigmoid(yes - no), in float64
            no, yes = (float(v) for v in out)
            return _sigmoid(yes - no)
        return _sigmoid(float(out))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
