"""``vlrank.Reranker``: IONOS-shaped reranking over an exported (or exported-on-first-use) model.

What differs from the other tasks: the prompt (a query against each document, text or Qwen3-VL) and
the result (sigmoid scores, best first, ``top_n``, echoed documents). See tasks/base.py for the rest.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlrank.engine.prompt_ids import context_too_long, text_rerank_ids, vl_rerank_ids
from vlrank.engine.runner import Row
from vlrank.errors import InvalidInputError, VlrankError
from vlrank.inputs import ParsedInput, parse_documents, parse_query
from vlrank.tasks.base import Prepared, Task, check_instruction, check_positive, side_blocks, usage


@dataclass(kw_only=True)
class _Prepared(Prepared):
    documents: list[ParsedInput]
    top_n: int | None
    return_documents: bool
    raw_scores: bool = False


class Reranker(Task):
    """Score documents against a query with Qwen3-VL-Reranker or Qwen3-Reranker.

    ``model``: a directory written by ``vlrank export``, a Hugging Face checkpoint directory (exported
    once into ``$VLRANK_CACHE`` or ~/.cache/vlrank) or a hub id. ``providers``: None/"auto", "cpu",
    "cuda" or ONNX Runtime provider names. ``batch_tokens``: rows × longest prompt per decoder run.
    ``ort_options``: ONNX Runtime session config entries for every session of the model (e.g.
    ``{"session.intra_op.allow_spinning": "0"}`` in a server). ``memory_budget``: bytes of working memory
    one decoder or vision run may use (default: half of the RAM the loaded model leaves free); a pair that
    cannot fit it is refused with MemoryBudgetError before any work (see vlrank/engine/budget.py).
    """

    task = "rerank"
    method = "rerank"
    call_args = frozenset({"query", "documents", "top_n", "instruction", "return_documents", "raw_scores"})
    inputs_field = "documents"
    image_verb = "score"

    # ---- public API -------------------------------------------------------------------------------------
    def rerank(self, query: Any, documents: Any, *, top_n: int | None = None, instruction: str | None = None,
               return_documents: bool = True, raw_scores: bool = False) -> dict:
        """IONOS rerank result: ``{"id", "object": "list", "model", "results": [{"index", "document",
        "relevance_score"}], "usage": {"prompt_tokens", "total_tokens"}}``, results best first.

        ``raw_scores=True`` adds ``"raw_score"`` to each result: the logit whose sigmoid is
        ``relevance_score`` (yes - no for Qwen3-Reranker), for calibration or fusion with other scores."""
        return self._call(query=query, documents=documents, top_n=top_n, instruction=instruction,
                          return_documents=return_documents, raw_scores=raw_scores)

    def rerank_many(self, calls: Sequence[Mapping[str, Any]]) -> list[dict | VlrankError]:
        """Many rerank calls through one batch plan; result i equals ``rerank(**calls[i])`` (ids aside), a
        bad call yields its typed error in place."""
        return self._call_many(calls)

    # ---- steps ----------------------------------------------------------------------------------------------

    def _prepare(self, *, query: Any = None, documents: Any = None, top_n: int | None = None,
                 instruction: str | None = None, return_documents: bool = True, raw_scores: bool = False,
                 images=None) -> _Prepared:
        top_n = check_positive(top_n, field="top_n", what="or None for every document")
        if not isinstance(return_documents, bool):
            raise InvalidInputError("return_documents: pass True or False", field="return_documents")
        if not isinstance(raw_scores, bool):
            raise InvalidInputError("raw_scores: pass True or False", field="raw_scores")
        instruction = check_instruction(instruction)
        q = parse_query(query, policy=self.fetch_policy)
        docs = parse_documents(documents, policy=self.fetch_policy)
        tok = self.runner.tokenizer
        fields = ["query"] + [f"documents[{i}]" for i in range(len(docs))]
        if self.family == "qwen3":
            for side, fld in zip([q, *docs], fields):
                if side.images or side.videos:
                    raise InvalidInputError(f"{fld}: this is a text reranker (Qwen3-Reranker); pass text only, or "
                                            "use a Qwen3-VL-Reranker model for images and videos", field=fld)
            ids = text_rerank_ids(tok, query=q, documents=docs, instruction=instruction,
                                  max_length=self.max_length)
            rows = [Row(r) for r in ids]
        else:
            # Truncation keeps every video token (they are special), so a video is bounded by the context.
            q_vids, *d_vids = self._prepare_videos([q, *docs], images, max_tokens=self.runner.manifest.context_length,
                                                   fields=fields)
            q_imgs, *d_imgs = self._prepare_images([q, *docs], images)
            _check_query_media(q_imgs, q_vids, context=self.runner.manifest.context_length,
                               min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            ids = vl_rerank_ids(tok, query=q, documents=docs, query_images=q_imgs, doc_images=d_imgs,
                                instruction=instruction, max_length=self.max_length,
                                min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                                query_videos=q_vids, doc_videos=d_vids)
            q_blocks = side_blocks(q_vids, q_imgs)
            rows = [Row(list(r), q_blocks + side_blocks(dv, di)) for r, dv, di in zip(ids, d_vids, d_imgs)]
        return _Prepared(rows=rows, documents=docs, top_n=top_n, return_documents=return_documents,
                         raw_scores=raw_scores)

    def _result(self, p: _Prepared, outputs: np.ndarray) -> dict:
        logits = [self._logit(o) for o in outputs]
        scores = [_sigmoid(x) for x in logits]
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        if p.top_n is not None:
            order = order[: p.top_n]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": i}
            if p.return_documents:
                item["document"] = p.documents[i].echo
            item["relevance_score"] = scores[i]
            if p.raw_scores:
                item["raw_score"] = logits[i]
            results.append(item)
        return {
            "id": f"rerank-{uuid.uuid4().hex}",
            "object": "list",
            "model": self.name,
            "results": results,
            "usage": usage(p.rows),
        }

    def _logit(self, out: np.ndarray) -> float:
        """The score's logit: relevance_score = sigmoid(logit), in float64."""
        if self.family == "qwen3":  # softmax([no, yes])[1] = sigmoid(yes - no)
            no, yes = (float(v) for v in out)
            return yes - no
        return float(out)


# Tokens an image costs in a prompt besides its pads: <|vision_start|> and <|vision_end|>.
IMAGE_WRAPPER_TOKENS = 2


def _check_query_media(images: list, videos: list, *, context: int, min_pixels: int, max_pixels: int) -> None:
    """A query whose images and videos alone overflow the context fails every pair: the error names the query
    (not its first document), before any document is looked at."""
    fixed = sum(v.num_tokens for v in videos)
    needed = fixed + sum(img.num_tokens + IMAGE_WRAPPER_TOKENS for img in images)
    if images and needed > context:
        raise context_too_long(needed=needed, text_tokens=needed - sum(img.num_tokens for img in images),
                               images=images, min_pixels=min_pixels, max_pixels=max_pixels, field="query",
                               context=context)


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
