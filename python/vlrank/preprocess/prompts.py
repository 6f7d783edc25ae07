"""Prompt token ids for the three model families: the typed Python face of ``rust/src/prompt.rs``.

Every builder returns the exact ids the reference model sees (template, image-pad expansion,
truncation); the work runs natively with the GIL released, and the ``*_batch`` forms run in
parallel. Images are given by their token counts (``vlrank.image_tokens`` / the preprocessed
image's ``num_tokens``); within one side, images come before texts, and a side with neither
renders as ``NULL``. Special-token strings inside user text (``"<|im_end|>"``) stay plain text.

Errors: ``InvalidInputError`` (bad argument, ``field`` names it), ``ContextTooLongError`` (the
prompt cannot fit the 32,768-token context, or an embedding input's ``max_length`` would cut an
image), ``TokenizerError`` (the tokenizer lacks the Qwen chat-template tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from vlrank import _native
from vlrank._native import Tokenizer

#: Context window of every supported checkpoint; no prompt is ever longer.
CONTEXT_TOKENS: int = _native.CONTEXT_TOKENS
#: System prompt of both rerankers.
RERANK_SYSTEM: str = _native.RERANK_SYSTEM
VL_RERANK_DEFAULT_INSTRUCTION: str = _native.VL_RERANK_DEFAULT_INSTRUCTION
EMBED_DEFAULT_INSTRUCTION: str = _native.EMBED_DEFAULT_INSTRUCTION
TEXT_RERANK_DEFAULT_INSTRUCTION: str = _native.TEXT_RERANK_DEFAULT_INSTRUCTION
VL_RERANK_MAX_LENGTH: int = _native.VL_RERANK_MAX_LENGTH
EMBED_MAX_LENGTH: int = _native.EMBED_MAX_LENGTH
TEXT_RERANK_MAX_LENGTH: int = _native.TEXT_RERANK_MAX_LENGTH

#: One video's tokens in a prompt: (tokens_per_group, timestamp_text) of its plan.
VideoTokens = tuple[int, Sequence[str]]
#: One side of a VL prompt: (image token counts, texts) or (image token counts, texts, videos).
VlSide = Union[tuple[Sequence[int], Sequence[str]], tuple[Sequence[int], Sequence[str], Sequence[VideoTokens]]]


def build_vl_rerank_ids(
    tokenizer: Tokenizer,
    *,
    query_images: Sequence[int],
    query_texts: Sequence[str],
    doc_images: Sequence[int],
    doc_texts: Sequence[str],
    instruction: str | None = None,
    max_length: int = VL_RERANK_MAX_LENGTH,
    query_videos: Sequence[VideoTokens] | None = None,
    doc_videos: Sequence[VideoTokens] | None = None,
) -> list[int]:
    """Qwen3-VL-Reranker ids of one (query, document) pair; a side renders its videos (each
    ``(tokens_per_group, timestamp_text)`` of its plan, transformers 5.24 layout), images, texts.

    ``instruction`` None or "" -> :data:`VL_RERANK_DEFAULT_INSTRUCTION`. Truncation (official):
    when all but the last 5 ids exceed ``max_length``, every special token (image pads included)
    and the first ``max_length - n_special`` other ids are kept, then the last 5 re-appended; so the
    result can be longer than ``max_length`` but never than :data:`CONTEXT_TOKENS`.
    """
    return _native.build_vl_rerank_ids(
        tokenizer,
        query_images=query_images,
        query_texts=query_texts,
        doc_images=doc_images,
        doc_texts=doc_texts,
        instruction=instruction,
        max_length=max_length,
        query_videos=query_videos,
        doc_videos=doc_videos,
    )


def build_vl_rerank_ids_batch(
    tokenizer: Tokenizer,
    *,
    query_images: Sequence[int],
    query_texts: Sequence[str],
    documents: Sequence[VlSide],
    instruction: str | None = None,
    max_length: int = VL_RERANK_MAX_LENGTH,
    query_videos: Sequence[VideoTokens] | None = None,
) -> list[list[int]]:
    """:func:`build_vl_rerank_ids` for one query and many documents, in parallel (order kept).

    A bad document raises with ``field`` like ``documents[3].images[0]``.
    """
    return _native.build_vl_rerank_ids_batch(
        tokenizer,
        query_images=query_images,
        query_texts=query_texts,
        documents=documents,
        instruction=instruction,
        max_length=max_length,
        query_videos=query_videos,
    )


def build_vl_embed_ids(
    tokenizer: Tokenizer,
    *,
    images: Sequence[int],
    texts: Sequence[str],
    instruction: str | None = None,
    max_length: int = EMBED_MAX_LENGTH,
    videos: Sequence[VideoTokens] | None = None,
) -> list[int]:
    """Qwen3-VL-Embedding ids of one input.

    The instruction is normalised by :func:`embed_instruction`. Longer than ``max_length`` -> the
    first ``max_length`` ids (the official processor's truncation); if that would cut an image,
    ``ContextTooLongError`` (the official processor fails there too).
    """
    return _native.build_vl_embed_ids(
        tokenizer, images=images, texts=texts, instruction=instruction, max_length=max_length, videos=videos
    )


def build_vl_embed_ids_batch(
    tokenizer: Tokenizer,
    *,
    inputs: Sequence[VlSide],
    instruction: str | None = None,
    max_length: int = EMBED_MAX_LENGTH,
) -> list[list[int]]:
    """:func:`build_vl_embed_ids` for many inputs, in parallel (order kept)."""
    return _native.build_vl_embed_ids_batch(
        tokenizer, inputs=inputs, instruction=instruction, max_length=max_length
    )


def build_text_rerank_ids(
    tokenizer: Tokenizer,
    *,
    query: str,
    document: str,
    instruction: str | None = None,
    max_length: int = TEXT_RERANK_MAX_LENGTH,
) -> list[int]:
    """Qwen3-Reranker (text) ids: prefix + body + suffix (the official README recipe).

    The body ``<Instruct>: {i}\\n<Query>: {q}\\n<Document>: {d}`` keeps its first
    ``max_length - len(prefix) - len(suffix)`` tokens. ``instruction`` None or "" ->
    :data:`TEXT_RERANK_DEFAULT_INSTRUCTION`.
    """
    return _native.build_text_rerank_ids(
        tokenizer, query=query, document=document, instruction=instruction, max_length=max_length
    )


def build_text_rerank_ids_batch(
    tokenizer: Tokenizer,
    *,
    query: str,
    documents: Sequence[str],
    instruction: str | None = None,
    max_length: int = TEXT_RERANK_MAX_LENGTH,
) -> list[list[int]]:
    """:func:`build_text_rerank_ids` for one query and many documents, in parallel (order kept)."""
    return _native.build_text_rerank_ids_batch(
        tokenizer, query=query, documents=documents, instruction=instruction, max_length=max_length
    )


def embed_instruction(instruction: str | None = None) -> str:
    """The embedder's system text: stripped, ``.`` appended unless it ends in punctuation
    (Unicode category P*), :data:`EMBED_DEFAULT_INSTRUCTION` when empty or None."""
    return _native.embed_instruction(instruction)


__all__ = [
    "CONTEXT_TOKENS",
    "RERANK_SYSTEM",
    "VL_RERANK_DEFAULT_INSTRUCTION",
    "EMBED_DEFAULT_INSTRUCTION",
    "TEXT_RERANK_DEFAULT_INSTRUCTION",
    "VL_RERANK_MAX_LENGTH",
    "EMBED_MAX_LENGTH",
    "TEXT_RERANK_MAX_LENGTH",
    "Tokenizer",
    "VlSide",
    "build_vl_rerank_ids",
    "build_vl_rerank_ids_batch",
    "build_vl_embed_ids",
    "build_vl_embed_ids_batch",
    "build_text_rerank_ids",
    "build_text_rerank_ids_batch",
    "embed_instruction",
]
