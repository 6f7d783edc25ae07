"""Long documents: per-side token caps, truncate-or-refuse, and windows scored as standalone documents.

Everything here works on the TEXT of a side before the prompt builder sees it (vLLM truncates before the
template too), so a capped side or a window is scored exactly like a side that holds that text:

  cap      a side's text, encoded alone (no template), longer than N tokens is cut after the N-th token:
           the text up to that token's end offset. Images and videos are never cut and never count.
  window   ``long_documents="chunk"``: windows of W tokens starting at token 0 with stride W - overlap; the
           last window ends at the last token; each window is the text between its tokens' offsets.

Offsets: the tokenizer is byte-level BPE, so a vocabulary entry holds one character per byte and its length
is the token's byte length; summing them over the ids of the (NFC-normalised: the tokenizer's normaliser)
text gives every token's end byte, checked against the text's UTF-8 length. A token that ends inside a
character (byte-level BPE can split one) ends after that character, a window that starts inside one starts
at it. Texts that NFC changes are cut in their NFC form (what the model reads anyway).
"""

from __future__ import annotations

import functools
import json
import math
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlrank.errors import ContextTooLongError, InvalidInputError, TokenizerError
from vlrank.inputs import ParsedInput
from vlrank.tasks.base import as_int

RERANK_TRUNCATE = ("END", "NONE")
EMBED_TRUNCATE = ("END", "START", "NONE")
LONG_DOCUMENTS = ("truncate", "chunk")
DEFAULT_MAX_CHUNKS = 16
#: A call holds at most this many windows per document (each at most max_length tokens), checked before any
#: window is made: chunking multiplies a call's rows, so the multiplier is bounded.
MAX_CHUNKS = 256
#: The keywords Reranker.rerank / rerank_many take for long documents (the CLI, server and Ray pass them through).
LONG_DOCUMENT_KEYS = frozenset({"max_tokens_per_doc", "max_tokens_per_query", "truncate", "long_documents",
                                "chunk_tokens", "chunk_overlap", "max_chunks_per_doc"})
#: Tokens kept free beside a default window: the text's first and last tokens may merge differently with
#: the template's text around them than when encoded alone.
SEAM_TOKENS = 4


def check_choice(value: Any, *, field: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidInputError(f"{field}={value!r}; pass one of {', '.join(repr(c) for c in choices)}", field=field)
    return value


def check_tokens(value: Any, *, field: str, what: str, minimum: int = 1, upper: int | None = None) -> int | None:
    """None or an integer >= ``minimum`` (and <= ``upper``; numpy integers accepted; bool, float, str refused)."""
    value = as_int(value)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (upper is not None and value > upper)):
        span = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        span = span if upper is None else f"an integer from {minimum} to {upper}"
        raise InvalidInputError(f"{field}={value!r}; pass {span} ({what})", field=field)
    return value


@dataclass(frozen=True, kw_only=True)
class LongDocuments:
    """A rerank call's checked long-document options."""

    max_tokens_per_doc: int | None = None
    max_tokens_per_query: int | None = None
    truncate: str = "END"
    mode: str = "truncate"
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None
    max_chunks: int = DEFAULT_MAX_CHUNKS

    @property
    def refuse(self) -> bool:
        return self.truncate == "NONE"

    @property
    def chunked(self) -> bool:
        return self.mode == "chunk"


def check_long_documents(*, max_tokens_per_doc: Any = None, max_tokens_per_query: Any = None, truncate: Any = "END",
                         long_documents: Any = "truncate", chunk_tokens: Any = None, chunk_overlap: Any = None,
                         max_chunks_per_doc: Any = None) -> LongDocuments:
    opts = LongDocuments(
        max_tokens_per_doc=check_tokens(max_tokens_per_doc, field="max_tokens_per_doc",
                                        what="or None to read whole documents"),
        max_tokens_per_query=check_tokens(max_tokens_per_query, field="max_tokens_per_query",
                                          what="or None to read the whole query"),
        truncate=check_choice(truncate, field="truncate", choices=RERANK_TRUNCATE),
        mode=check_choice(long_documents, field="long_documents", choices=LONG_DOCUMENTS),
        chunk_tokens=check_tokens(chunk_tokens, field="chunk_tokens",
                                  what="or None for the largest window that fits max_length"),
        chunk_overlap=check_tokens(chunk_overlap, field="chunk_overlap", minimum=0,
                                   what="or None for 1/8 of the window"),
        max_chunks=check_tokens(max_chunks_per_doc, field="max_chunks_per_doc", upper=MAX_CHUNKS,
                                what=f"or None for {DEFAULT_MAX_CHUNKS}") or DEFAULT_MAX_CHUNKS,
    )
    if opts.chunk_overlap is not None and opts.chunk_tokens is not None and opts.chunk_overlap >= opts.chunk_tokens:
        raise InvalidInputError(f"chunk_overlap={opts.chunk_overlap} is not below chunk_tokens={opts.chunk_tokens}; "
                                "pass an overlap smaller than the window", field="chunk_overlap")
    return opts


# ---- token offsets ------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _byte_lengths(path: str) -> np.ndarray:
    """Byte length of every vocabulary id (byte-level BPE: one character per byte); added tokens never occur
    in plain user text, so they are left at 0."""
    vocab = json.loads(Path(path).read_text(encoding="utf-8"))["model"]["vocab"]
    lengths = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    for token, i in vocab.items():
        lengths[i] = len(token)
    return lengths


@dataclass(frozen=True)
class Spans:
    """A text (NFC) and the character span of each of its tokens, encoded alone."""

    text: str
    starts: np.ndarray
    ends: np.ndarray

    @property
    def count(self) -> int:
        return len(self.ends)


def token_spans(tokenizer: Any, tokenizer_path: Path, text: str) -> Spans:
    text = unicodedata.normalize("NFC", text)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    lengths = _byte_lengths(str(tokenizer_path))
    byte_ends = np.cumsum(lengths[ids]) if len(ids) else np.zeros(0, dtype=np.int64)
    raw = text.encode("utf-8")
    if (byte_ends[-1] if len(ids) else 0) != len(raw):
        raise TokenizerError(f"{tokenizer_path}: not a byte-level BPE vocabulary, so token offsets are unknown; "
                             "long-document options need a Qwen tokenizer")
    byte_starts = byte_ends - lengths[ids]
    if len(raw) == len(text):  # ASCII: bytes are characters
        return Spans(text, byte_starts, byte_ends)
    char_starts = np.flatnonzero((np.frombuffer(raw, dtype=np.uint8) & 0xC0) != 0x80)
    return Spans(text, np.searchsorted(char_starts, byte_starts, side="right") - 1,
                 np.searchsorted(char_starts, byte_ends, side="left"))


def side_text(side: ParsedInput) -> str:
    return "".join(side.texts)


def with_text(side: ParsedInput, text: str) -> ParsedInput:
    return replace(side, texts=(text,) if text else ())


def cap_side(side: ParsedInput, *, cap: int | None, spans: Spans | None, refuse: bool, field: str,
             cap_field: str) -> ParsedInput:
    """``side`` with its text cut after the ``cap``-th token (or refused when ``refuse``)."""
    if cap is None or spans is None or spans.count <= cap:
        return side
    if refuse:
        raise ContextTooLongError(f"{field}: its text is {spans.count} tokens, over {cap_field}={cap}; pass "
                                  f"truncate='END' to cut it, or a {cap_field} of {spans.count} or more", field=field)
    return with_text(side, spans.text[: int(spans.ends[cap - 1])])


@dataclass(frozen=True)
class Window:
    """One window of a document: which document, its index among ``count`` and its character span."""

    doc: int
    index: int
    count: int
    start: int
    end: int

    def chunk(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count, "start": self.start, "end": self.end}


def windows(spans: Spans, *, doc: int, size: int, overlap: int | None, max_chunks: int, refuse: bool,
            field: str) -> list[Window]:
    """The windows of one document's text: ``size`` tokens from token 0, stride ``size - overlap``."""
    total = spans.count
    if total <= size:
        return [Window(doc, 0, 1, 0, len(spans.text))]
    overlap = size // 8 if overlap is None else overlap
    if overlap >= size:
        raise InvalidInputError(f"chunk_overlap={overlap} is not below the window of {size} tokens; pass a smaller "
                                "chunk_overlap", field="chunk_overlap")
    stride = size - overlap
    count = 1 + math.ceil((total - size) / stride)
    if count > max_chunks:
        if refuse:
            raise ContextTooLongError(
                f"{field}: its text is {total} tokens, {count} windows of {size}, over max_chunks_per_doc="
                f"{max_chunks}; pass truncate='END' to score the first {max_chunks}, or a larger max_chunks_per_doc "
                "or chunk_tokens", field=field)
        count = max_chunks
    out = []
    for k in range(count):
        first, last = k * stride, min(k * stride + size, total) - 1
        out.append(Window(doc, k, count, int(spans.starts[first]), int(spans.ends[last])))
    return out


def refuse_over(rows: list[list[int]], *, max_length: int, fields: list[str], hint: str) -> None:
    """``truncate="NONE"``: the first row over ``max_length`` (built untruncated) is refused."""
    for row, field in zip(rows, fields):
        if len(row) > max_length:
            raise ContextTooLongError(f"{field}: the prompt is {len(row)} tokens, over max_length={max_length}; "
                                      f"pass {hint}", field=field)


__all__ = ["LONG_DOCUMENT_KEYS", "LongDocuments", "check_long_documents", "check_choice", "token_spans", "Spans", "cap_side",
           "windows", "Window", "refuse_over", "side_text", "with_text", "EMBED_TRUNCATE", "SEAM_TOKENS"]
