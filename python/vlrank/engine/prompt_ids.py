"""Prompt ids of a call, with context errors that say what to change: the one Python face of the native
builders (``_native.build_*_ids``, one per model family over a whole call).

A call's parsed inputs become :class:`~vlrank.preprocess.prompts.Side` values (texts, the images'
``num_tokens``, the videos' ``tokens``); the builder returns per row its ids or a ``ContextOverflow``
with the tokens the row needs, so the first row that cannot fit raises a ``ContextTooLongError`` naming
its field (``documents[i]`` / ``input[i]``), those tokens and a ``max_pixels`` that fits — decided from
header-probed image sizes, before any pixel is decoded. Images and videos are duck-typed (anything with
``num_tokens`` / ``tokens``), so this module does not import the vision code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlrank import _native
from vlrank.errors import ContextTooLongError
from vlrank.preprocess.images import IMAGE_FACTOR
from vlrank.preprocess.prompts import CONTEXT_TOKENS, Side


def context_too_long(*, needed: int, text_tokens: int, images: Sequence[Any], min_pixels: int,
                     max_pixels: int, field: str, context: int = CONTEXT_TOKENS,
                     max_length: int | None = None) -> ContextTooLongError:
    """A ContextTooLongError that says how many tokens the prompt needs and which max_pixels would fit.

    ``text_tokens``: the prompt's tokens besides the image pads that must fit beside them. smart_resize
    never gives an image more than max_pixels / IMAGE_FACTOR² tokens, so spreading what the limit has left
    over the images gives a max_pixels that is guaranteed to fit (unless min_pixels forces more).
    ``max_length``: set for embeddings, whose truncation to max_length refuses to cut an image."""
    image_tokens = sum(img.num_tokens for img in images)
    # Embeddings truncate to the first max_length ids and refuse a cut image: when the prompt fits the
    # context, max_length is the limit the advice is about.
    cut_by_max_length = max_length is not None and needed <= context
    if cut_by_max_length:
        context = max_length
    if not images:
        hint = "pass shorter texts or shorter videos (lower fps, max_frames or total_pixels)"
    else:
        per_image = (context - text_tokens) // len(images)
        unit = IMAGE_FACTOR * IMAGE_FACTOR
        if per_image * unit >= max(min_pixels, unit):
            hint = (f"pass max_pixels={per_image * unit} or less (at most {per_image} tokens per image; "
                    f"it is {max_pixels} now)")
        elif per_image >= 1:
            # min_pixels above what fits: lowering min_pixels together with max_pixels fixes it.
            hint = (f"pass min_pixels and max_pixels of {per_image * unit} or less (at most {per_image} tokens "
                    f"per image; min_pixels={min_pixels} forces more)")
        else:
            hint = "pass fewer images or shorter texts: even the smallest images do not fit"
    if cut_by_max_length:
        return ContextTooLongError(
            f"{field}: the prompt needs {needed} tokens ({image_tokens} of them for {len(images)} image(s)) but "
            f"max_length={max_length} would cut its image tokens (an image is never truncated); pass "
            f"max_length={needed} or more, or {hint.removeprefix('pass ')}",
            field=field,
        )
    return ContextTooLongError(
        f"{field}: the prompt needs {needed} tokens ({image_tokens} of them for {len(images)} image(s)) but the "
        f"model's context holds {context}; {hint}",
        field=field,
    )


def _side(texts: Sequence[str], images: Sequence[Any], videos: Sequence[Any] | None) -> Side:
    return Side(texts=tuple(texts), images=tuple(img.num_tokens for img in images),
                videos=tuple(v.tokens for v in videos or ()))


def _raise_first_overflow(rows: Sequence[Any], images: Sequence[Sequence[Any]], *, field: str, min_pixels: int,
                          max_pixels: int, max_length: int | None = None) -> list[list[int]]:
    """The rows' ids, or the advice error of the first row that does not fit (``{field}[i]``).
    ``max_length``: set for embeddings (the limit their images must fit within)."""
    for i, row in enumerate(rows):
        if not isinstance(row, _native.ContextOverflow):
            continue
        name = f"{field}[{i}]"
        if max_length is not None and images[i] and row.fixed_tokens + len(images[i]) > max_length:
            # Even 1-token images are cut: only a larger max_length helps.
            raise ContextTooLongError(
                f"{name}: max_length={max_length} cuts into the image tokens even at one token per image; pass a "
                "larger max_length (or None for the model's default)", field=name)
        raise context_too_long(needed=row.needed, text_tokens=row.fixed_tokens, images=images[i],
                               min_pixels=min_pixels, max_pixels=max_pixels, field=name, max_length=max_length)
    return rows


def vl_rerank_ids(tokenizer, *, query, documents: Sequence, query_images: Sequence[Any],
                  doc_images: Sequence[Sequence[Any]], instruction: str | None, max_length: int,
                  min_pixels: int, max_pixels: int, query_videos: Sequence | None = None,
                  doc_videos: Sequence[Sequence] | None = None) -> list[list[int]]:
    """Qwen3-VL-Reranker ids of a parsed query against parsed documents (each side: its videos, its
    images, its texts); a pair over the context raises a ContextTooLongError naming that document, the
    tokens it needs and a max_pixels that fits."""
    doc_videos = doc_videos or [()] * len(documents)
    rows = _native.build_vl_rerank_ids(
        tokenizer, query=_side(query.texts, query_images, query_videos),
        documents=[_side(d.texts, imgs, v) for d, imgs, v in zip(documents, doc_images, doc_videos)],
        instruction=instruction, max_length=max_length)
    return _raise_first_overflow(rows, [list(query_images) + list(imgs) for imgs in doc_images], field="documents",
                                 min_pixels=min_pixels, max_pixels=max_pixels)


def vl_embed_ids(tokenizer, *, inputs: Sequence, images: Sequence[Sequence[Any]], instruction: str | None,
                 max_length: int, min_pixels: int, max_pixels: int,
                 videos: Sequence[Sequence] | None = None) -> list[list[int]]:
    """Qwen3-VL-Embedding ids of parsed inputs; an input whose truncation to max_length would cut an image
    raises a ContextTooLongError naming it, with the max_length or max_pixels that fits."""
    videos = videos or [()] * len(inputs)
    rows = _native.build_vl_embed_ids(
        tokenizer, inputs=[_side(x.texts, imgs, v) for x, imgs, v in zip(inputs, images, videos)],
        instruction=instruction, max_length=max_length)
    return _raise_first_overflow(rows, images, field="input", min_pixels=min_pixels, max_pixels=max_pixels,
                                 max_length=max_length)


def text_rerank_ids(tokenizer, *, query, documents: Sequence, instruction: str | None,
                    max_length: int) -> list[list[int]]:
    """Qwen3-Reranker (text) ids of a parsed query against parsed documents (their texts joined)."""
    return _native.build_text_rerank_ids(
        tokenizer, query="".join(query.texts), documents=["".join(d.texts) for d in documents],
        instruction=instruction, max_length=max_length)


__all__ = ["CONTEXT_TOKENS", "context_too_long", "vl_rerank_ids", "vl_embed_ids", "text_rerank_ids"]
