"""What a prompt is made of: the template constants of the three model families and the ``Side`` the
native builders read (``_native.build_vl_rerank_ids`` / ``build_vl_embed_ids`` /
``build_text_rerank_ids``, one per family, over a whole call). ``vlrank.engine.prompt_ids`` turns a
call's parsed inputs into sides and a row that does not fit into a ContextTooLongError with advice.

Within one side, videos come before images and images before texts, with no separators; a side with
none renders as ``NULL``. Special-token strings inside user text (``"<|im_end|>"``) stay plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vlrank import _native

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


@dataclass(frozen=True)
class Side:
    """One side of a VL prompt (a query, a document, an embedding input).

    ``images`` are token counts (``vlrank.image_tokens`` / a prepared image's ``num_tokens``), ``videos``
    each video's ``(tokens_per_group, timestamp_text)`` (transformers 5.24 layout)."""

    texts: Sequence[str] = ()
    images: Sequence[int] = ()
    videos: Sequence[VideoTokens] = ()


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
    "Side",
    "VideoTokens",
    "embed_instruction",
]
