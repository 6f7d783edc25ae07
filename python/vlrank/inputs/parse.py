"""IONOS / OpenAI request shapes -> typed parts (videos, then images, then texts: the official order).

One *side* (a rerank query, one rerank document, one embedding input) may be given as

* a string — one text;
* ``{"text": "..."}`` — one text (IONOS);
* ``{"content": [part, ...]}`` or ``{"content": "..."}`` — OpenAI-style parts, where a part is
  ``{"type": "text", "text": ...}``, ``{"type": "image_url", "image_url": {"url": ...}}`` (``image_url`` may
  also be the URL string itself), ``{"type": "image", "image": <source>}`` (qwen-vl-utils style),
  ``{"type": "video_url", "video_url": {"url": ...}}`` (a video file) or ``{"type": "video", "video":
  [frame, ...]}`` (a frame list; a non-list ``video`` is a file), video parts with the optional keys
  ``fps``, ``max_frames``, ``min_pixels``, ``total_pixels`` (``vlrank.inputs.video_sources``);
* ``{"text": ..., "image": <source> | [<source>, ...], "video": ...}`` — the official Qwen3-VL-Embedding dict;
* (library only) an image object: encoded ``bytes``, a ``PIL.Image.Image``, a uint8 numpy array or a Path.

Image sources (frames included) are resolved by ``vlrank.inputs.sources.resolve_image`` and video files by
``vlrank.inputs.video_sources.resolve_video_file`` under a ``FetchPolicy``; remote URLs of one call are
fetched concurrently, each distinct URL once. Empty strings are valid texts (the reference scores ``""`` as a
document, see golden text_rerank.json) and are NOT the empty side: the empty side (no media, no text; the
prompt says ``NULL``, golden vl_embed has one) is spelled ``{"content": []}``. A ``ParsedInput`` given
anywhere a side is expected passes through untouched, so a caller (the server) can parse and fetch once,
under its own policy.

``ParsedInput.echo`` is the IONOS result document: ``{"text": str, "multi_modal": None}`` for a single text,
otherwise ``{"text": None, "multi_modal": [the parts as given]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from vlrank.errors import InvalidInputError
from vlrank.inputs.parts import (
    ParsedInput,
    Side,
    is_image_object,
    parse_messages,
    parse_side,
    part_document,
)
from vlrank.inputs.policy import FetchPolicy
from vlrank.inputs.sources import ImageSource, is_remote_url, resolve_image
from vlrank.inputs.video_sources import VideoInput, resolve_video_file

DEFAULT_MAX_DOCUMENTS = 10_000
_MAX_PARALLEL_FETCHES = 8


def _resolve_image(src: Any, *, field: str, policy: FetchPolicy) -> ImageSource:
    return resolve_image(src, field=field, policy=policy)


def _resolve_all(jobs: list[tuple[Callable[..., Any], Any, str]], *, policy: FetchPolicy) -> list[Any]:
    """Run every (resolver, source, field) job; remote URLs concurrently (one fetch per distinct URL and
    resolver: a page image shared by many documents is downloaded once), errors raised in input order."""
    remote = [i for i, (_, src, _) in enumerate(jobs) if is_remote_url(src)]
    if len(remote) <= 1:
        return [fn(src, field=fld, policy=policy) for fn, src, fld in jobs]
    out: list[Any] = [None] * len(jobs)
    by_url: dict[tuple[Any, str], Future[Any]] = {}
    remote_set = set(remote)
    with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL_FETCHES, len(remote))) as pool:
        for i in remote:
            fn, src, fld = jobs[i]
            if (fn, src) not in by_url:
                by_url[(fn, src)] = pool.submit(fn, src, field=fld, policy=policy)
        try:
            for i, (fn, src, fld) in enumerate(jobs):
                if i not in remote_set:
                    out[i] = fn(src, field=fld, policy=policy)
                    continue
                got = by_url[(fn, src)].result()
                if isinstance(got, ImageSource) and got.origin != fld:
                    got = ImageSource(data=got.data, format=got.format, origin=fld)
                out[i] = got
        except BaseException:
            for fut in by_url.values():  # do not keep downloading for a request that already failed
                fut.cancel()
            raise
    return out


def _resolve(sides: list[Side], *, policy: FetchPolicy) -> list[ParsedInput]:
    """Resolve every image, frame and video file of every side (see ``_resolve_all``)."""
    jobs: list[tuple[Callable[..., Any], Any, str]] = []
    for side in sides:
        for ref in side.video_refs:
            if ref.frames is None:
                jobs.append((resolve_video_file, ref.source, ref.field))
            else:
                jobs += [(_resolve_image, src, fld) for src, fld in ref.frames]
        jobs += [(_resolve_image, src, fld) for src, fld in side.image_refs]
    resolved = iter(_resolve_all(jobs, policy=policy))
    out: list[ParsedInput] = []
    for side in sides:
        if side.parsed is not None:
            out.append(side.parsed)
            continue
        videos = []
        for ref in side.video_refs:
            if ref.frames is None:
                videos.append(VideoInput(data=next(resolved), origin=ref.field, **ref.options))
            else:
                frames = tuple(next(resolved) for _ in ref.frames)
                videos.append(VideoInput(frames=frames, origin=ref.field, **ref.options))
        images = tuple(next(resolved) for _ in side.image_refs)
        out.append(ParsedInput(images=images, texts=tuple(side.texts), echo=side.echo, videos=tuple(videos)))
    return out


_MEDIA_KEYS = frozenset({"image", "image_url", "video", "video_url"})


def holds_images(*values: Any) -> bool:
    """True when any of ``values`` (request fields as decoded from JSON, or library arguments) holds
    something ``_resolve`` would treat as an image or video: a mapping with an ``image`` / ``image_url`` /
    ``video`` / ``video_url`` key or ``type``, or an image object. The walk is over the *decoded* values, so a URL written with JSON escapes
    is seen as the URL it is, and an image part counts whatever its URL looks like. Iterative: any nesting
    depth is fine. A server uses it to keep every request that may fetch or decode an image or a video
    off its event loop."""
    stack: list[Any] = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, str | int | float | bool) or value is None:
            continue
        if isinstance(value, Mapping):
            kind = value.get("type")
            if _MEDIA_KEYS & set(value) or (isinstance(kind, str) and kind in _MEDIA_KEYS):
                return True
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        else:  # ParsedInput, bytes, arrays, PIL images, paths: not plain JSON text
            return True
    return False


def _check_policy(policy: Any) -> FetchPolicy:
    if policy is None:
        return FetchPolicy()
    if not isinstance(policy, FetchPolicy):
        raise InvalidInputError(
            f"policy: expected a vlrank.FetchPolicy, got {type(policy).__name__}; pass FetchPolicy(...) or None",
            field="policy",
        )
    return policy


def parse_query(value: Any, *, policy: FetchPolicy | None = None) -> ParsedInput:
    """Parse a rerank query (any side shape of the module docstring); fields are named ``query...``."""
    policy = _check_policy(policy)
    return _resolve([parse_side(value, field="query")], policy=policy)[0]


def _check_count(n: int, limit: int, *, field: str) -> None:
    if n == 0:
        raise InvalidInputError(f"{field}: the list is empty; pass at least one document", field=field)
    if n > limit:
        raise InvalidInputError(
            f"{field}: {n} documents is over the limit of {limit}; split the request into smaller ones", field=field
        )


def parse_documents(
    values: Any, *, policy: FetchPolicy | None = None, max_documents: int = DEFAULT_MAX_DOCUMENTS
) -> list[ParsedInput]:
    """Parse rerank documents: a non-empty list of sides, at most ``max_documents``; fields ``documents[i]...``.

    vLLM's ``{"content": [part, ...]}`` (one document per part) is accepted too; fields
    ``documents.content[i]...``.
    """
    policy = _check_policy(policy)
    if isinstance(values, Mapping) and set(values) == {"content"} and isinstance(values["content"], list | tuple):
        # vLLM's score/rerank form: {"content": [part, ...]} is one document per part.
        parts = values["content"]
        _check_count(len(parts), max_documents, field="documents.content")
        return _resolve([part_document(p, field=f"documents.content[{i}]") for i, p in enumerate(parts)],
                        policy=policy)
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
        raise InvalidInputError(
            f"documents: expected a list of documents, got {type(values).__name__}; pass a list such as "
            '["text", {"content": [...]}]',
            field="documents",
        )
    _check_count(len(values), max_documents, field="documents")
    return _resolve([parse_side(v, field=f"documents[{i}]") for i, v in enumerate(values)], policy=policy)


def parse_embedding_input(
    *,
    input: Any = None,  # noqa: A002 - the OpenAI/IONOS field name
    messages: Any = None,
    policy: FetchPolicy | None = None,
    max_inputs: int = DEFAULT_MAX_DOCUMENTS,
) -> list[ParsedInput]:
    """Parse an embeddings request: ``input`` (a string, a list of strings / side objects, or one side
    object) or ``messages=[{"role": "user", "content": ...}]`` (all user messages form ONE input).

    Returns one ``ParsedInput`` per embedding to compute, in request order.
    """
    policy = _check_policy(policy)
    if (input is None) == (messages is None):
        # The message begins with the field it names ("messages" when both are given).
        fld = "input" if input is None else "messages"
        raise InvalidInputError(
            f"{fld}: pass exactly one of input= (a string or a list) or messages= (a chat message list)",
            field=fld,
        )
    if messages is not None:
        return _resolve([parse_messages(messages)], policy=policy)
    if isinstance(input, str | Mapping | ParsedInput) or is_image_object(input):
        return _resolve([parse_side(input, field="input")], policy=policy)
    if not isinstance(input, Sequence):
        raise InvalidInputError(
            f"input: cannot use a {type(input).__name__}; pass a string or a list of strings / objects",
            field="input",
        )
    if not input:
        raise InvalidInputError("input: the list is empty; pass at least one string or object", field="input")
    if len(input) > max_inputs:
        raise InvalidInputError(
            f"input: {len(input)} inputs is over the limit of {max_inputs}; split the request", field="input"
        )
    first = input[0]
    if isinstance(first, int) or (isinstance(first, list) and first and isinstance(first[0], int)):
        raise InvalidInputError(
            "input: token-id arrays are not accepted (the prompt is built from text); pass the text itself",
            field="input",
        )
    return _resolve([parse_side(v, field=f"input[{i}]") for i, v in enumerate(input)], policy=policy)


__all__ = ["DEFAULT_MAX_DOCUMENTS", "ParsedInput", "holds_images", "parse_documents", "parse_embedding_input",
           "parse_query"]
