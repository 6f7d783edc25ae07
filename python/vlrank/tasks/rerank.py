"""``vlrank.Reranker``: IONOS-shaped reranking over an exported (or exported-on-first-use) model.

What differs from the other tasks: the prompt (a query against each document, text or Qwen3-VL) and
the result (sigmoid scores, best first, ``top_n``, echoed documents). See tasks/base.py for the rest.
"""

from __future__ import annotations

import inspect
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlrank.engine.prompt_ids import context_too_long, text_rerank_ids, vl_rerank_ids
from vlrank.engine.runner import Row
from vlrank.engine.prefix import check_share_prefix
from vlrank.errors import ContextTooLongError, InvalidInputError, ModelDirectoryError, VlrankError
from vlrank.inputs import ParsedInput, parse_documents, parse_query
from vlrank.tasks.base import Prepared, Task, check_instruction, check_positive, side_blocks, usage
from vlrank.tasks.long_documents import (
    LONG_DOCUMENT_KEYS,
    SEAM_TOKENS,
    LongDocuments,
    Spans,
    Window,
    cap_side,
    check_long_documents,
    refuse_over,
    side_text,
    token_spans,
    windows,
    with_text,
)


@dataclass(kw_only=True)
class _Prepared(Prepared):
    documents: list[ParsedInput]
    top_n: int | None
    return_documents: bool
    raw_scores: bool = False
    windows: list[Window] | None = None  # long_documents="chunk": row i is window windows[i]


@dataclass
class _Media:
    """The query's and each document's planned images and videos (nothing decoded)."""

    q_imgs: list
    d_imgs: list[list]
    q_vids: list
    d_vids: list[list]


class Reranker(Task):
    """Score documents against a query with Qwen3-VL-Reranker or Qwen3-Reranker.

    ``model``: a directory written by ``vlrank export``, a Hugging Face checkpoint directory (exported
    once into ``$VLRANK_CACHE`` or ~/.cache/vlrank) or a hub id. ``providers``: None/"auto", "cpu",
    "cuda" or ONNX Runtime provider names. ``batch_tokens``: rows × longest prompt per decoder run.
    ``ort_options``: ONNX Runtime session config entries for every session of the model (e.g.
    ``{"session.intra_op.allow_spinning": "0"}`` in a server). ``memory_budget``: bytes of working memory
    one decoder or vision run may use (default: half of the RAM the loaded model leaves free); a pair that
    cannot fit it is refused with MemoryBudgetError before any work (see vlrank/engine/budget.py).

    ``share_prefix``: the documents of a call (and of calls with the same query and instruction in one
    ``rerank_many`` / server batch) share the prompt up to the document — system prompt, instruction and
    query — and a directory exported with prefix inputs runs it once (engine/prefix.py). None: where the
    measured rule says it pays (long queries, query images, many documents); True: whenever pairs share a
    prefix (ModelDirectoryError for a directory exported before vlrank could); False: never. Scores are
    the same within float rounding either way.
    """

    task = "rerank"
    method = "rerank"
    call_args = frozenset({"query", "documents", "top_n", "instruction", "return_documents",
                           "raw_scores"}) | LONG_DOCUMENT_KEYS
    inputs_field = "documents"
    image_verb = "score"

    def __init__(self, model: str | Path, *, share_prefix: bool | None = None, **options: Any) -> None:
        share_prefix = check_share_prefix(share_prefix)  # before loading anything
        super().__init__(model, **options)
        if share_prefix is True and not self.runner.manifest.prefix_kv:
            raise ModelDirectoryError(
                f"share_prefix=True: {self.runner.manifest.root} was exported without prefix inputs (its decoder "
                "takes no prefix K/V); re-export the checkpoint with this vlrank (`vlrank export SRC OUT`: rerank "
                "exports take prefixes by default), or pass share_prefix=None / False to score full prompts",
                field="share_prefix")
        self.share_prefix = share_prefix

    # The signature help and ``inspect`` show: ``share_prefix`` and then every keyword of Task.__init__, each
    # keyword-only and typed (``**options`` forwards them unchanged).
    __init__.__signature__ = inspect.Signature([
        *list(inspect.signature(Task.__init__).parameters.values())[:2],
        inspect.Parameter("share_prefix", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="bool | None"),
        *list(inspect.signature(Task.__init__).parameters.values())[2:]], return_annotation=None)

    # ---- public API -------------------------------------------------------------------------------------
    def rerank(self, query: Any, documents: Any, *, top_n: int | None = None, instruction: str | None = None,
               return_documents: bool = True, raw_scores: bool = False, max_tokens_per_doc: int | None = None,
               max_tokens_per_query: int | None = None, truncate: str = "END", long_documents: str = "truncate",
               chunk_tokens: int | None = None, chunk_overlap: int | None = None,
               max_chunks_per_doc: int | None = None) -> dict:
        """IONOS rerank result: ``{"id", "object": "list", "model", "results": [{"index", "document",
        "relevance_score"}], "usage": {"prompt_tokens", "total_tokens"}}``, results best first.

        ``raw_scores=True`` adds ``"raw_score"`` to each result: the logit whose sigmoid is
        ``relevance_score`` (yes - no for Qwen3-Reranker), for calibration or fusion with other scores.

        Long documents (tasks/long_documents.py): ``max_tokens_per_doc`` / ``max_tokens_per_query`` cut a
        side's text (encoded alone) after its N-th token, before the template and before ``max_length``;
        images and videos are never cut and do not count. ``truncate="NONE"`` refuses (ContextTooLongError
        naming ``documents[i]`` / ``query``) a side over its cap or a pair over ``max_length`` instead.
        ``long_documents="chunk"`` scores a document as windows of ``chunk_tokens`` (default: the largest
        that fits max_length, or ``max_tokens_per_doc``) with ``chunk_overlap`` (default 1/8) tokens of
        overlap, at most ``max_chunks_per_doc`` (16) of them; ``relevance_score`` is the best window's and
        the result gains ``"chunk": {"index", "count", "start", "end"}`` (character offsets of its text).
        ``usage`` counts every token scored."""
        return self._call(query=query, documents=documents, top_n=top_n, instruction=instruction,
                          return_documents=return_documents, raw_scores=raw_scores,
                          max_tokens_per_doc=max_tokens_per_doc, max_tokens_per_query=max_tokens_per_query,
                          truncate=truncate, long_documents=long_documents, chunk_tokens=chunk_tokens,
                          chunk_overlap=chunk_overlap, max_chunks_per_doc=max_chunks_per_doc)

    def rerank_many(self, calls: Sequence[Mapping[str, Any]]) -> list[dict | VlrankError]:
        """Many rerank calls through one batch plan; result i equals ``rerank(**calls[i])`` (ids aside), a
        bad call yields its typed error in place."""
        return self._call_many(calls)

    # ---- steps ----------------------------------------------------------------------------------------------

    def _prepare(self, *, query: Any = None, documents: Any = None, top_n: int | None = None,
                 instruction: str | None = None, return_documents: bool = True, raw_scores: bool = False,
                 max_tokens_per_doc: Any = None, max_tokens_per_query: Any = None, truncate: Any = "END",
                 long_documents: Any = "truncate", chunk_tokens: Any = None, chunk_overlap: Any = None,
                 max_chunks_per_doc: Any = None, images=None) -> _Prepared:
        top_n = check_positive(top_n, field="top_n", what="or None for every document")
        if not isinstance(return_documents, bool):
            raise InvalidInputError("return_documents: pass True or False", field="return_documents")
        if not isinstance(raw_scores, bool):
            raise InvalidInputError("raw_scores: pass True or False", field="raw_scores")
        instruction = check_instruction(instruction)
        opts = check_long_documents(max_tokens_per_doc=max_tokens_per_doc, max_tokens_per_query=max_tokens_per_query,
                                    truncate=truncate, long_documents=long_documents, chunk_tokens=chunk_tokens,
                                    chunk_overlap=chunk_overlap, max_chunks_per_doc=max_chunks_per_doc)
        q = parse_query(query, policy=self.fetch_policy)
        docs = parse_documents(documents, policy=self.fetch_policy)
        fields = ["query"] + [f"documents[{i}]" for i in range(len(docs))]
        if self.family == "qwen3":
            for side, fld in zip([q, *docs], fields):
                if side.images or side.videos:
                    raise InvalidInputError(f"{fld}: this is a text reranker (Qwen3-Reranker); pass text only, or "
                                            "use a Qwen3-VL-Reranker model for images and videos", field=fld)
            media = _Media([], [[] for _ in docs], [], [[] for _ in docs])
        else:
            # Truncation keeps every video token (they are special), so a video is bounded by the context.
            q_vids, *d_vids = self._prepare_videos([q, *docs], images, max_tokens=self.runner.manifest.context_length,
                                                   fields=fields)
            q_imgs, *d_imgs = self._prepare_images([q, *docs], images)
            _check_query_media(q_imgs, q_vids, context=self.runner.manifest.context_length,
                               min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            media = _Media(q_imgs, d_imgs, q_vids, d_vids)
        # Caps and windows cut the TEXT of a side before the prompt builder (as vLLM does before its template).
        q = cap_side(q, cap=opts.max_tokens_per_query, spans=self._spans(q, opts.max_tokens_per_query),
                     refuse=opts.refuse, field="query", cap_field="max_tokens_per_query")
        wins: list[Window] | None = None
        if opts.chunked:
            wins, run_docs = self._windows(q, docs, media, opts, instruction=instruction, fields=fields[1:])
            owners = [w.doc for w in wins]
        else:
            run_docs = [cap_side(d, cap=opts.max_tokens_per_doc, spans=self._spans(d, opts.max_tokens_per_doc),
                                 refuse=opts.refuse, field=f, cap_field="max_tokens_per_doc")
                        for d, f in zip(docs, fields[1:])]
            owners = list(range(len(docs)))
        # truncate="NONE": built untruncated (to the context), then any pair over max_length is refused.
        limit = self.runner.manifest.context_length if opts.refuse else self.max_length
        ids = self._ids(q, run_docs, owners, media, instruction=instruction, max_length=limit)
        if opts.refuse:
            refuse_over(ids, max_length=self.max_length, fields=[fields[1 + o] for o in owners],
                        hint="truncate='END' to cut it, a max_tokens_per_doc cap, or long_documents='chunk'")
        q_blocks = side_blocks(media.q_vids, media.q_imgs)
        rows = [Row(list(r), q_blocks + side_blocks(media.d_vids[o], media.d_imgs[o])) for r, o in zip(ids, owners)]
        return _Prepared(rows=rows, documents=docs, top_n=top_n, return_documents=return_documents,
                         raw_scores=raw_scores, windows=wins)

    def _ids(self, q: ParsedInput, docs: list[ParsedInput], owners: list[int], media: _Media, *,
             instruction: str | None, max_length: int) -> list[list[int]]:
        """Prompt ids of ``q`` against each of ``docs`` (document ``owners[i]``'s media go with ``docs[i]``)."""
        tok = self.runner.tokenizer
        if self.family == "qwen3":
            return text_rerank_ids(tok, query=q, documents=docs, instruction=instruction, max_length=max_length)
        return vl_rerank_ids(tok, query=q, documents=docs, query_images=media.q_imgs,
                             doc_images=[media.d_imgs[o] for o in owners], instruction=instruction,
                             max_length=max_length, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                             query_videos=media.q_vids, doc_videos=[media.d_vids[o] for o in owners])

    def _text_spans(self, side: ParsedInput) -> Spans:
        return token_spans(self.runner.tokenizer, self.runner.manifest.file("tokenizer"), side_text(side))

    def _spans(self, side: ParsedInput, cap: int | None) -> Spans | None:
        """Token spans of a side's text, only when a cap asks for them."""
        return self._text_spans(side) if cap is not None and side.texts else None

    def _windows(self, q: ParsedInput, docs: list[ParsedInput], media: _Media, opts: LongDocuments, *,
                 instruction: str | None, fields: list[str]) -> tuple[list[Window], list[ParsedInput]]:
        """Every document's windows in document order, and each window as a standalone document (a document
        that fits one window is itself). The default window is the largest text that fits max_length beside
        the query and the document's media (their prompt with the text left out)."""
        bare = self._ids(q, [with_text(d, "") for d in docs], list(range(len(docs))), media,
                         instruction=instruction, max_length=self.runner.manifest.context_length)
        out: list[Window] = []
        sides: list[ParsedInput] = []
        for i, (d, row, fld) in enumerate(zip(docs, bare, fields)):
            room = self.max_length - len(row) - SEAM_TOKENS
            if room < 1:
                what = "the query and this document's images and videos" if d.images or d.videos else "the query"
                raise ContextTooLongError(
                    f"{fld}: the prompt without its text ({what}) takes {len(row)} of max_length={self.max_length} "
                    "tokens, leaving no room for a window of its text; pass smaller images or videos (max_pixels), "
                    "a shorter query, a larger max_length, or long_documents='truncate'", field=fld)
            size = opts.chunk_tokens or opts.max_tokens_per_doc or room
            spans = self._text_spans(d)
            wins = windows(spans, doc=i, size=size, overlap=opts.chunk_overlap, max_chunks=opts.max_chunks,
                           refuse=opts.refuse, field=fld)
            out += wins
            sides += [d] if len(wins) == 1 else [with_text(d, spans.text[w.start:w.end]) for w in wins]
        return out, sides

    def _result(self, p: _Prepared, outputs: np.ndarray) -> dict:
        logits = [self._logit(o) for o in outputs]
        best: list[Window | None] = [None] * len(p.documents)
        if p.windows is not None:  # a document's score is its best window's (the first of equals)
            per_doc = [-math.inf] * len(p.documents)
            for w, x in zip(p.windows, logits):
                if x > per_doc[w.doc] or best[w.doc] is None:
                    per_doc[w.doc], best[w.doc] = x, w
            logits = per_doc
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
            if best[i] is not None:
                item["chunk"] = best[i].chunk()
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
