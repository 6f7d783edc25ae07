"""IONOS / OpenAI request shapes -> typed parts (images first, then texts: the official order).

One *side* (a rerank query, one rerank document, one embedding input) may be given as

* a string — one text;
* ``{"text": "..."}`` — one text (IONOS);
* ``{"content": [part, ...]}`` or ``{"content": "..."}`` — OpenAI-style parts, where a part is
  ``{"type": "text", "text": ...}``, ``{"type": "image_url", "image_url": {"url": ...}}`` (``image_url`` may
  also be the URL string itself) or ``{"type": "image", "image": <source>}`` (qwen-vl-utils style);
* ``{"text": ..., "image": <source> | [<source>, ...]}`` — the official Qwen3-VL-Embedding dict;
* (library only) an image object: encoded ``bytes``, a ``PIL.Image.Image``, a uint8 numpy array or a Path.

Image sources are resolved by ``vlrank.inputs.sources.resolve_image`` under a ``FetchPolicy``; remote URLs of one call
are fetched concurrently. Empty strings are valid texts (the reference scores ``""`` as a document, see
golden text_rerank.json) and are NOT the empty side: the empty side (no image, no text; the prompt says
``NULL``, golden vl_embed has one) is spelled ``{"content": []}``. A ``ParsedInput`` given anywhere a side is
expected passes through untouched, so a caller (the server) can parse and fetch once, under its own policy.

``ParsedInput.echo`` is the IONOS result document: ``{"text": str, "multi_modal": None}`` for a single text,
otherwise ``{"text": None, "multi_modal": [the parts as given]}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlrank.errors import InvalidInputError
from vlrank.inputs.policy import FetchPolicy
from vlrank.inputs.sources import ImageSource, is_remote_url, resolve_image

DEFAULT_MAX_DOCUMENTS = 10_000
_MAX_PARALLEL_FETCHES = 8
_SIDE_KEYS = frozenset({"text", "content", "image"})
_UNSUPPORTED_PARTS = {
    "video": "video input is not supported yet",
    "video_url": "video input is not supported yet",
    "input_audio": "audio input is not supported",
    "audio_url": "audio input is not supported",
}
_WHAT_SIDE = (
    'pass a string, {"text": "..."} or {"content": [{"type": "text", "text": "..."}, '
    '{"type": "image_url", "image_url": {"url": "..."}}]}'
)


@dataclass(frozen=True, eq=False)
class ParsedInput:
    """One query, document or embedding input: its images (in order), then its texts (in order).

    ``echo`` is the IONOS result document for this input (see the module docstring).
    """

    images: tuple[ImageSource, ...]
    texts: tuple[str, ...]
    echo: dict[str, Any]

    @property
    def num_images(self) -> int:
        """How many images this input holds."""
        return len(self.images)

    @property
    def image_payloads(self) -> list[bytes | np.ndarray]:
        """The images as the native preprocessor takes them (encoded bytes or uint8 arrays), in order."""
        return [img.payload for img in self.images]

    @property
    def is_text_only(self) -> bool:
        """True when the input has no image."""
        return not self.images


@dataclass
class _Side:
    """A side after structural parsing, images not yet resolved: (source, field path) pairs."""

    image_refs: list[tuple[Any, str]]
    texts: list[str]
    echo: dict[str, Any]
    parsed: ParsedInput | None = None  # already parsed by the caller: passed through untouched


def _text(value: Any, *, field: str) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{field}: text bytes are not valid UTF-8 ({exc.reason} at byte {exc.start}); pass a str or "
                "UTF-8 encoded bytes",
                field=field,
            ) from exc
    if not isinstance(value, str):
        raise InvalidInputError(
            f"{field}: expected a text string, got {type(value).__name__}; pass a str", field=field
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. from a JSON "\ud800"
            raise InvalidInputError(
                f"{field}: text is not valid Unicode ({exc.reason} at index {exc.start}); pass well-formed text",
                field=field,
            ) from exc
    return value


def _is_image_object(value: Any) -> bool:
    if isinstance(value, bytes | bytearray | memoryview | np.ndarray | Path):
        return True
    return type(value).__module__.startswith("PIL.")


def _part(part: Any, *, field: str, side: _Side) -> None:
    if not isinstance(part, Mapping):
        raise InvalidInputError(
            f"{field}: a content part must be an object, got {type(part).__name__}; pass "
            '{"type": "text", "text": "..."} or {"type": "image_url", "image_url": {"url": "..."}}',
            field=field,
        )
    kind = part.get("type")
    if kind == "text":
        if "text" not in part:
            raise InvalidInputError(f'{field}: text part has no "text"; pass {{"type": "text", "text": "..."}}', field=field)
        side.texts.append(_text(part["text"], field=f"{field}.text"))
    elif kind == "image_url":
        if "image_url" not in part:
            raise InvalidInputError(
                f'{field}: image_url part has no "image_url"; pass {{"type": "image_url", "image_url": {{"url": "..."}}}}',
                field=field,
            )
        spec = part["image_url"]
        if isinstance(spec, str):
            side.image_refs.append((spec, f"{field}.image_url"))
        elif isinstance(spec, Mapping):
            if "url" not in spec:
                raise InvalidInputError(
                    f'{field}.image_url: missing "url"; pass {{"url": "data:image/png;base64,..."}} or an http(s) URL',
                    field=f"{field}.image_url",
                )
            url = spec["url"]
            if not isinstance(url, str):
                raise InvalidInputError(
                    f"{field}.image_url.url: expected a URL string, got {type(url).__name__}; pass a data:, "
                    "http(s):// or file:// URL",
                    field=f"{field}.image_url.url",
                )
            side.image_refs.append((url, f"{field}.image_url.url"))
        else:
            raise InvalidInputError(
                f'{field}.image_url: expected {{"url": "..."}} or a URL string, got {type(spec).__name__}',
                field=f"{field}.image_url",
            )
    elif kind == "image":
        if part.get("image") is None:
            raise InvalidInputError(
                f'{field}: image part has no "image"; pass {{"type": "image", "image": <URL, path, bytes or PIL image>}}',
                field=field,
            )
        side.image_refs.append((part["image"], f"{field}.image"))
    elif isinstance(kind, str) and kind in _UNSUPPORTED_PARTS:
        raise InvalidInputError(
            f"{field}.type: {_UNSUPPORTED_PARTS[kind]}; pass text and image parts only", field=f"{field}.type"
        )
    else:
        raise InvalidInputError(
            f'{field}.type: unknown content part type {kind!r}; pass "text", "image_url" or "image"',
            field=f"{field}.type",
        )


def _parse_content(content: Any, *, field: str, side: _Side) -> None:
    if isinstance(content, str):
        side.texts.append(_text(content, field=field))
        side.echo = {"text": content, "multi_modal": None}
        return
    if not isinstance(content, list | tuple):
        raise InvalidInputError(
            f"{field}: expected a list of content parts, got {type(content).__name__}; {_WHAT_SIDE}", field=field
        )
    # An empty list is the empty side (the prompt says NULL; golden vl_embed has one), unlike an empty text.
    for i, part in enumerate(content):
        _part(part, field=f"{field}[{i}]", side=side)
    if not side.image_refs and len(side.texts) == 1:
        side.echo = {"text": side.texts[0], "multi_modal": None}
    else:
        side.echo = {"text": None, "multi_modal": list(content)}


def _parse_side(value: Any, *, field: str) -> _Side:
    side = _Side(image_refs=[], texts=[], echo={})
    if isinstance(value, ParsedInput):
        side.parsed = value
        return side
    if isinstance(value, str):
        side.texts.append(_text(value, field=field))
        side.echo = {"text": value, "multi_modal": None}
        return side
    if value is None:
        raise InvalidInputError(f"{field}: got None; {_WHAT_SIDE}", field=field)
    if isinstance(value, Mapping):
        keys = set(value)
        unknown = keys - _SIDE_KEYS
        if unknown:
            hint = " (pass the instruction as the instruction= argument)" if "instruction" in unknown else ""
            raise InvalidInputError(
                f"{field}: unknown key(s) {sorted(map(str, unknown))}{hint}; {_WHAT_SIDE}", field=field
            )
        if "content" in keys:
            if keys != {"content"}:
                raise InvalidInputError(
                    f'{field}: "content" cannot be combined with "text"/"image"; put every part inside "content"',
                    field=field,
                )
            _parse_content(value["content"], field=f"{field}.content", side=side)
            return side
        return _parse_official_dict(value, field=field, side=side)
    if _is_image_object(value):
        side.image_refs.append((value, field))
        side.echo = {"text": None, "multi_modal": [{"type": "image", "image": value}]}
        return side
    raise InvalidInputError(f"{field}: cannot use a {type(value).__name__}; {_WHAT_SIDE}", field=field)


def _parse_official_dict(value: Mapping[str, Any], *, field: str, side: _Side) -> _Side:
    """``{"text": ..., "image": ...}`` — IONOS text documents and the official Qwen3-VL-Embedding dicts."""
    image = value.get("image")
    images = list(image) if isinstance(image, list | tuple) else ([] if image is None else [image])
    for i, img in enumerate(images):
        side.image_refs.append((img, f"{field}.image[{i}]" if isinstance(image, list | tuple) else f"{field}.image"))
    text = value.get("text")
    if text is not None:
        side.texts.append(_text(text, field=f"{field}.text"))
    if not side.image_refs and not side.texts:
        raise InvalidInputError(f'{field}: no "text" and no "image"; {_WHAT_SIDE}', field=field)
    if not side.image_refs:
        side.echo = {"text": side.texts[0], "multi_modal": None}
    else:
        parts: list[dict[str, Any]] = [{"type": "image", "image": img} for img in images]
        parts += [{"type": "text", "text": t} for t in side.texts]
        side.echo = {"text": None, "multi_modal": parts}
    return side


def _resolve(sides: list[_Side], *, policy: FetchPolicy) -> list[ParsedInput]:
    """Resolve every image of every side; remote URLs concurrently, errors raised in input order."""
    refs = [ref for side in sides for ref in side.image_refs]
    remote = [i for i, (src, _) in enumerate(refs) if is_remote_url(src)]
    resolved: list[ImageSource | None] = [None] * len(refs)
    if len(remote) > 1:
        # One fetch per distinct URL (a page image shared by many documents is downloaded once).
        by_url: dict[str, Future[ImageSource]] = {}
        remote_set = set(remote)
        with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL_FETCHES, len(remote))) as pool:
            for i in remote:
                src, fld = refs[i]
                if src not in by_url:
                    by_url[src] = pool.submit(resolve_image, src, field=fld, policy=policy)
            try:
                for i, (src, fld) in enumerate(refs):
                    if i in remote_set:
                        got = by_url[src].result()
                        same = got.origin == fld
                        resolved[i] = got if same else ImageSource(data=got.data, format=got.format, origin=fld)
                    else:
                        resolved[i] = resolve_image(src, field=fld, policy=policy)
            except BaseException:
                for fut in by_url.values():  # do not keep downloading for a request that already failed
                    fut.cancel()
                raise
    else:
        resolved = [resolve_image(src, field=fld, policy=policy) for src, fld in refs]
    out: list[ParsedInput] = []
    k = 0
    for side in sides:
        if side.parsed is not None:
            out.append(side.parsed)
            continue
        n = len(side.image_refs)
        images = tuple(img for img in resolved[k : k + n] if img is not None)
        k += n
        out.append(ParsedInput(images=images, texts=tuple(side.texts), echo=side.echo))
    return out


_IMAGE_KEYS = frozenset({"image", "image_url"})


def holds_images(*values: Any) -> bool:
    """True when any of ``values`` (request fields as decoded from JSON, or library arguments) holds
    something ``_resolve`` would treat as an image: a mapping with an ``image`` / ``image_url`` key or
    ``type``, or an image object. The walk is over the *decoded* values, so a URL written with JSON escapes
    is seen as the URL it is, and an image part counts whatever its URL looks like. Iterative: any nesting
    depth is fine. A server uses it to keep every request that may fetch or decode an image off its
    event loop."""
    stack: list[Any] = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, str | int | float | bool) or value is None:
            continue
        if isinstance(value, Mapping):
            kind = value.get("type")
            if _IMAGE_KEYS & set(value) or (isinstance(kind, str) and kind in _IMAGE_KEYS):
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
    return _resolve([_parse_side(value, field="query")], policy=policy)[0]


def _check_count(n: int, limit: int, *, field: str) -> None:
    if n == 0:
        raise InvalidInputError(f"{field}: the list is empty; pass at least one document", field=field)
    if n > limit:
        raise InvalidInputError(
            f"{field}: {n} documents is over the limit of {limit}; split the request into smaller ones", field=field
        )


def _part_document(part: Any, *, field: str) -> _Side:
    side = _Side(image_refs=[], texts=[], echo={})
    _part(part, field=field, side=side)
    if side.texts:
        side.echo = {"text": side.texts[0], "multi_modal": None}
    else:
        side.echo = {"text": None, "multi_modal": [part]}
    return side


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
        return _resolve([_part_document(p, field=f"documents.content[{i}]") for i, p in enumerate(parts)],
                        policy=policy)
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
        raise InvalidInputError(
            f"documents: expected a list of documents, got {type(values).__name__}; pass a list such as "
            '["text", {"content": [...]}]',
            field="documents",
        )
    _check_count(len(values), max_documents, field="documents")
    return _resolve([_parse_side(v, field=f"documents[{i}]") for i, v in enumerate(values)], policy=policy)


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
        return _resolve([_parse_messages(messages)], policy=policy)
    if isinstance(input, str | Mapping | ParsedInput) or _is_image_object(input):
        return _resolve([_parse_side(input, field="input")], policy=policy)
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
    return _resolve([_parse_side(v, field=f"input[{i}]") for i, v in enumerate(input)], policy=policy)


def _parse_messages(messages: Any) -> _Side:
    if not isinstance(messages, list | tuple) or not messages:
        raise InvalidInputError(
            'messages: expected a non-empty list like [{"role": "user", "content": [...]}]', field="messages"
        )
    side = _Side(image_refs=[], texts=[], echo={})
    all_parts: list[Any] = []
    for i, msg in enumerate(messages):
        fld = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise InvalidInputError(
                f'{fld}: expected {{"role": "user", "content": ...}}, got {type(msg).__name__}', field=fld
            )
        role = msg.get("role")
        if role != "user":
            hint = "; pass the instruction as the instruction= argument" if role == "system" else ""
            raise InvalidInputError(
                f'{fld}.role: only "user" messages can be embedded, got {role!r}{hint}', field=f"{fld}.role"
            )
        if "content" not in msg:
            raise InvalidInputError(f'{fld}: missing "content"; pass a string or a list of parts', field=fld)
        content = msg["content"]
        part_side = _Side(image_refs=[], texts=[], echo={})
        _parse_content(content, field=f"{fld}.content", side=part_side)
        side.image_refs += part_side.image_refs
        side.texts += part_side.texts
        all_parts += [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    if not side.image_refs and len(side.texts) == 1:
        side.echo = {"text": side.texts[0], "multi_modal": None}
    else:
        side.echo = {"text": None, "multi_modal": all_parts}
    return side


__all__ = [
    "DEFAULT_MAX_DOCUMENTS",
    "FetchPolicy",
    "ImageSource",
    "ParsedInput",
    "parse_query",
    "parse_documents",
    "parse_embedding_input",
    "holds_images",
]
