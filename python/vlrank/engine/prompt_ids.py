"""Prompt ids of a call, with context errors that say what to change.

The ids come from the native builders (``vlrank.preprocess.prompts``); a row that cannot fit raises a
``ContextTooLongError`` naming its field (``documents[i]`` / ``input[i]``), the tokens it needs and a
``max_pixels`` that fits — decided from header-probed image sizes, before any pixel is decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vlrank.engine.vision import ImageBatch, PreparedImage
from vlrank.errors import ContextTooLongError
from vlrank.preprocess import prompts
from vlrank.preprocess.images import IMAGE_FACTOR

CONTEXT_TOKENS = prompts.CONTEXT_TOKENS
# Tokens one image costs in a prompt besides its pads: <|vision_start|> and <|vision_end|>.
IMAGE_WRAPPER_TOKENS = 2


def context_too_long(*, needed: int, text_tokens: int, images: Sequence[PreparedImage], min_pixels: int,
                     max_pixels: int, field: str, context: int = CONTEXT_TOKENS,
                     max_length: int | None = None) -> ContextTooLongError:
    """A ContextTooLongError that says how many tokens the prompt needs and which max_pixels would fit.

    ``text_tokens``: the prompt's tokens besides the image pads. smart_resize never gives an image more
    than max_pixels / IMAGE_FACTOR² tokens, so spreading what the context has left over the images gives a
    max_pixels that is guaranteed to fit (unless min_pixels forces more)."""
    image_tokens = sum(img.num_tokens for img in images)
    # Embeddings truncate to the first max_length ids and refuse a cut image: when the prompt fits the
    # context, max_length is the limit the advice is about.
    cut_by_max_length = max_length is not None and needed <= context
    if cut_by_max_length:
        context = max_length
    n = max(len(images), 1)
    per_image = (context - text_tokens) // n
    unit = IMAGE_FACTOR * IMAGE_FACTOR
    if per_image * unit >= max(min_pixels, unit):
        hint = (f"pass max_pixels={per_image * unit} or less (at most {per_image} tokens per image; "
                f"it is {max_pixels} now)")
    elif per_image >= 1:
        # min_pixels above what fits: lowering min_pixels together with max_pixels fixes it.
        hint = (f"pass min_pixels and max_pixels of {per_image * unit} or less (at most {per_image} tokens per "
                f"image; min_pixels={min_pixels} forces more)")
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


def context_error_for_row(build_ids: Callable[[list[int]], Sequence[int]], images: Sequence[PreparedImage], *,
                          min_pixels: int, max_pixels: int, field: str,
                          max_length: int | None = None) -> ContextTooLongError:
    """``context_too_long`` for a row whose prompt builder refused it: ``build_ids(counts)`` rebuilds the
    row's ids with the given per-image token counts; building it with 1-token images measures the text.
    ``max_length``: set for embeddings, whose truncation to max_length refuses to cut an image."""
    try:
        ones = build_ids([1] * len(images))
    except ContextTooLongError:
        if max_length is None:
            raise
        # Even 1-token images are cut: only a larger max_length helps.
        return ContextTooLongError(
            f"{field}: max_length={max_length} cuts into the image tokens even at one token per image; pass a "
            "larger max_length (or None for the model's default)", field=field)
    text_tokens = len(ones) - len(images)
    needed = text_tokens + sum(img.num_tokens for img in images)
    return context_too_long(needed=needed, text_tokens=text_tokens, images=images, min_pixels=min_pixels,
                            max_pixels=max_pixels, field=field, max_length=max_length)


def _video_tokens(videos: Sequence | None) -> list[tuple[int, list[str]]]:
    return [v.tokens for v in videos or ()]


def vl_rerank_ids(tokenizer, *, query, documents: Sequence, query_images: Sequence[PreparedImage],
                  doc_images: Sequence[Sequence[PreparedImage]], instruction: str | None, max_length: int,
                  min_pixels: int, max_pixels: int, query_videos: Sequence | None = None,
                  doc_videos: Sequence[Sequence] | None = None) -> list[list[int]]:
    """``prompts.build_vl_rerank_ids_batch`` for a parsed query and documents (each side: its videos'
    ``(tokens_per_group, timestamp_text)``, image token counts, texts); a pair over the context raises a
    ContextTooLongError naming that document, the tokens it needs and a max_pixels that fits. Video tokens
    count as fixed tokens of the row here: a video alone over the context was refused when it was planned."""
    q_counts = ImageBatch.token_counts(query_images)
    q_videos = _video_tokens(query_videos)
    d_videos = [_video_tokens(v) for v in (doc_videos or [[] for _ in documents])]

    def row(i: int, counts: list[int]) -> Sequence[int]:
        return prompts.build_vl_rerank_ids(
            tokenizer, query_images=counts[: len(q_counts)], query_texts=list(query.texts),
            doc_images=counts[len(q_counts):], doc_texts=list(documents[i].texts), instruction=instruction,
            max_length=max_length, query_videos=q_videos, doc_videos=d_videos[i])

    rows = [list(query_images) + list(imgs) for imgs in doc_images]
    fields = [f"documents[{i}]" for i in range(len(rows))]
    extra = [_tokens(q_videos) + _tokens(dv) for dv in d_videos]
    _check_image_tokens(row, rows, min_pixels=min_pixels, max_pixels=max_pixels, fields=fields, extra=extra)
    try:
        return [list(r) for r in prompts.build_vl_rerank_ids_batch(
            tokenizer, query_images=q_counts, query_texts=list(query.texts),
            documents=[(ImageBatch.token_counts(imgs), list(d.texts), dv)
                       for imgs, d, dv in zip(doc_images, documents, d_videos)],
            instruction=instruction, max_length=max_length, query_videos=q_videos)]
    except ContextTooLongError as exc:
        raise _first_context_error(row, rows, min_pixels=min_pixels, max_pixels=max_pixels,
                                   fields=fields) or exc from None


def _tokens(videos: Sequence[tuple[int, list[str]]]) -> int:
    """A lower bound of the videos' prompt tokens (pads and the four wrapper tokens per pair / video)."""
    return sum(len(ts) * (tpg + 2) + 2 for tpg, ts in videos)


def vl_embed_ids(tokenizer, *, inputs: Sequence, images: Sequence[Sequence[PreparedImage]],
                 instruction: str | None, max_length: int, min_pixels: int, max_pixels: int,
                 videos: Sequence[Sequence] | None = None) -> list[list[int]]:
    """``prompts.build_vl_embed_ids_batch`` for parsed inputs, with image-aware context errors."""
    vids = [_video_tokens(v) for v in (videos or [[] for _ in inputs])]

    def row(i: int, counts: list[int]) -> Sequence[int]:
        return prompts.build_vl_embed_ids(tokenizer, images=counts, texts=list(inputs[i].texts),
                                          instruction=instruction, max_length=max_length, videos=vids[i])

    rows = [list(imgs) for imgs in images]
    fields = [f"input[{i}]" for i in range(len(rows))]
    _check_image_tokens(row, rows, min_pixels=min_pixels, max_pixels=max_pixels, fields=fields,
                        extra=[_tokens(v) for v in vids])
    try:
        return [list(r) for r in prompts.build_vl_embed_ids_batch(
            tokenizer, inputs=[(ImageBatch.token_counts(imgs), list(x.texts), v)
                               for imgs, x, v in zip(images, inputs, vids)],
            instruction=instruction, max_length=max_length)]
    except ContextTooLongError as exc:
        raise _first_context_error(row, rows, min_pixels=min_pixels, max_pixels=max_pixels,
                                   fields=fields, max_length=max_length) or exc from None


def _first_context_error(build_row: Callable[[int, list[int]], Sequence[int]],
                         rows: Sequence[Sequence[PreparedImage]], *, min_pixels: int, max_pixels: int,
                         fields: Sequence[str], max_length: int | None = None) -> ContextTooLongError | None:
    for i, imgs in enumerate(rows):
        if not imgs:
            continue
        try:
            build_row(i, ImageBatch.token_counts(imgs))
        except ContextTooLongError:
            return context_error_for_row(lambda counts, i=i: build_row(i, counts), imgs, min_pixels=min_pixels,
                                         max_pixels=max_pixels, field=fields[i], max_length=max_length)
    return None


def _check_image_tokens(build_row: Callable[[int, list[int]], Sequence[int]],
                        rows: Sequence[Sequence[PreparedImage]], *, min_pixels: int, max_pixels: int,
                        fields: Sequence[str], extra: Sequence[int] | None = None) -> None:
    """Rows whose images (with ``extra`` fixed tokens each, e.g. their videos) overflow the context fail here,
    before the prompt builder (which refuses a single image count over the context as a plain invalid
    count, without the max_pixels advice)."""
    for i, imgs in enumerate(rows):
        fixed = extra[i] if extra else 0
        if imgs and fixed + sum(img.num_tokens + IMAGE_WRAPPER_TOKENS for img in imgs) > CONTEXT_TOKENS:
            raise context_error_for_row(lambda counts, i=i: build_row(i, counts), imgs, min_pixels=min_pixels,
                                        max_pixels=max_pixels, field=fields[i])


def text_rerank_ids(tokenizer, *, query, documents: Sequence, instruction: str | None,
                    max_length: int) -> list[list[int]]:
    """Qwen3-Reranker (text) ids of a parsed query against parsed documents (their texts joined)."""
    return [list(r) for r in prompts.build_text_rerank_ids_batch(
        tokenizer, query="".join(query.texts), documents=["".join(d.texts) for d in documents],
        instruction=instruction, max_length=max_length)]


__all__ = ["CONTEXT_TOKENS", "context_too_long", "context_error_for_row", "vl_rerank_ids", "vl_embed_ids",
           "text_rerank_ids"]
