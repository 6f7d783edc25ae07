"""Request shapes -> sides (structural parsing; nothing fetched or decoded): the content parts, the official
Qwen3-VL-Embedding dict and chat messages. ``vlrank.inputs.parse`` resolves what a side refers to.

Within a side the official order holds: videos, then images, then texts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any

import numpy as np

from vlrank.errors import InvalidInputError
from vlrank.inputs.sources import ImageSource
from vlrank.inputs.video_sources import VideoInput, video_options

SIDE_KEYS = frozenset({"text", "content", "image", "video"})
UNSUPPORTED_PARTS = {
    "input_audio": "audio input is not supported",
    "audio_url": "audio input is not supported",
}
WHAT_SIDE = (
    'pass a string, {"text": "..."} or {"content": [{"type": "text", "text": "..."}, '
    '{"type": "image_url", "image_url": {"url": "..."}}, {"type": "video_url", "video_url": {"url": "..."}}]}'
)
_PART_TYPES = '"text", "image_url", "image", "video_url" or "video"'


@dataclass(frozen=True, eq=False)
class ParsedInput:
    """One query, document or embedding input: its videos, images and texts (each in order; the prompt
    renders them in that order, as the official code does).

    ``echo`` is the IONOS result document for this input (see ``vlrank.inputs.parse``).
    """

    images: tuple[ImageSource, ...]
    texts: tuple[str, ...]
    echo: dict[str, Any]
    videos: tuple[VideoInput, ...] = ()

    @property
    def num_videos(self) -> int:
        """How many videos (files or frame lists) this input holds."""
        return len(self.videos)

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
        """True when the input has no image and no video."""
        return not self.images and not self.videos


@dataclass
class Side:
    """A side after structural parsing, nothing resolved yet: images as (source, field path) pairs, videos
    as ``VideoRef``s."""

    image_refs: list[tuple[Any, str]]
    texts: list[str]
    echo: dict[str, Any]
    parsed: ParsedInput | None = None  # already parsed by the caller: passed through untouched
    video_refs: list[VideoRef] = dc_field(default_factory=list)

    @property
    def has_media(self) -> bool:
        return bool(self.image_refs or self.video_refs)


@dataclass
class VideoRef:
    """One video of a side before resolving: a file source, or frame sources as (source, field) pairs."""

    field: str
    options: dict[str, Any]
    source: Any = None
    frames: list[tuple[Any, str]] | None = None


def _video_part(part: Mapping[str, Any], *, field: str, side: Side) -> None:
    kind = part["type"]
    if kind == "video_url":
        if "video_url" not in part:
            raise InvalidInputError(f'{field}: video_url part has no "video_url"; pass {{"type": "video_url", '
                                    '"video_url": {"url": "..."}}', field=field)
        spec = part["video_url"]
        if isinstance(spec, Mapping):
            if "url" not in spec:
                raise InvalidInputError(f'{field}.video_url: missing "url"; pass {{"url": "data:video/mp4;base64,..."}} '
                                        "or an http(s) URL", field=f"{field}.video_url")
            src, fld = spec["url"], f"{field}.video_url.url"
            if not isinstance(src, str):
                raise InvalidInputError(f"{fld}: expected a URL string, got {type(src).__name__}; pass a data:, "
                                        "http(s):// or file:// URL", field=fld)
        elif isinstance(spec, str):
            src, fld = spec, f"{field}.video_url"
        else:
            raise InvalidInputError(f'{field}.video_url: expected {{"url": "..."}} or a URL string, got '
                                    f"{type(spec).__name__}", field=f"{field}.video_url")
        side.video_refs.append(VideoRef(field=fld, source=src, options=video_options(part, field=field, frame_list=False)))
        return
    if part.get("video") is None:
        raise InvalidInputError(f'{field}: video part has no "video"; pass {{"type": "video", "video": [frame, ...]}} '
                                "(a list of images) or a video file path", field=field)
    add_video(part["video"], field=f"{field}.video", side=side, options_from=part, options_field=field)


def add_video(value: Any, *, field: str, side: Side, options_from: Mapping[str, Any] | None = None,
              options_field: str = "") -> None:
    """A ``video`` value: a list is one frame list (its items image sources), anything else a video file."""
    frame_list = isinstance(value, list | tuple)
    options = video_options(options_from or {}, field=options_field or field, frame_list=frame_list)
    if frame_list:
        if not value:
            raise InvalidInputError(f"{field}: the frame list is empty; pass at least one frame (an odd count is "
                                    "padded to even by repeating the last frame)", field=field)
        frames = [(f, f"{field}[{i}]") for i, f in enumerate(value)]
        side.video_refs.append(VideoRef(field=field, frames=frames, options=options))
    else:
        side.video_refs.append(VideoRef(field=field, source=value, options=options))


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


def is_image_object(value: Any) -> bool:
    if isinstance(value, bytes | bytearray | memoryview | np.ndarray | Path):
        return True
    return type(value).__module__.startswith("PIL.")


def parse_part(part: Any, *, field: str, side: Side) -> None:
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
    elif kind in ("video_url", "video"):
        _video_part(part, field=field, side=side)
    elif isinstance(kind, str) and kind in UNSUPPORTED_PARTS:
        raise InvalidInputError(
            f"{field}.type: {UNSUPPORTED_PARTS[kind]}; pass text, image and video parts only", field=f"{field}.type"
        )
    else:
        raise InvalidInputError(
            f"{field}.type: unknown content part type {kind!r}; pass {_PART_TYPES}",
            field=f"{field}.type",
        )


def parse_content(content: Any, *, field: str, side: Side) -> None:
    if isinstance(content, str):
        side.texts.append(_text(content, field=field))
        side.echo = {"text": content, "multi_modal": None}
        return
    if not isinstance(content, list | tuple):
        raise InvalidInputError(
            f"{field}: expected a list of content parts, got {type(content).__name__}; {WHAT_SIDE}", field=field
        )
    # An empty list is the empty side (the prompt says NULL; golden vl_embed has one), unlike an empty text.
    for i, part in enumerate(content):
        parse_part(part, field=f"{field}[{i}]", side=side)
    if not side.has_media and len(side.texts) == 1:
        side.echo = {"text": side.texts[0], "multi_modal": None}
    else:
        side.echo = {"text": None, "multi_modal": list(content)}


def parse_side(value: Any, *, field: str) -> Side:
    side = Side(image_refs=[], texts=[], echo={})
    if isinstance(value, ParsedInput):
        side.parsed = value
        return side
    if isinstance(value, str):
        side.texts.append(_text(value, field=field))
        side.echo = {"text": value, "multi_modal": None}
        return side
    if value is None:
        raise InvalidInputError(f"{field}: got None; {WHAT_SIDE}", field=field)
    if isinstance(value, Mapping):
        keys = set(value)
        unknown = keys - SIDE_KEYS
        if unknown:
            hint = " (pass the instruction as the instruction= argument)" if "instruction" in unknown else ""
            raise InvalidInputError(
                f"{field}: unknown key(s) {sorted(map(str, unknown))}{hint}; {WHAT_SIDE}", field=field
            )
        if "content" in keys:
            if keys != {"content"}:
                raise InvalidInputError(
                    f'{field}: "content" cannot be combined with "text"/"image"; put every part inside "content"',
                    field=field,
                )
            parse_content(value["content"], field=f"{field}.content", side=side)
            return side
        return _parse_official_dict(value, field=field, side=side)
    if is_image_object(value):
        side.image_refs.append((value, field))
        side.echo = {"text": None, "multi_modal": [{"type": "image", "image": value}]}
        return side
    raise InvalidInputError(f"{field}: cannot use a {type(value).__name__}; {WHAT_SIDE}", field=field)


def _parse_official_dict(value: Mapping[str, Any], *, field: str, side: Side) -> Side:
    """``{"text": ..., "image": ..., "video": ...}`` — IONOS text documents and the official Qwen3-VL-Embedding
    dicts. ``video`` as the official ``format_model_input``: a string / bytes / path is one video file, a
    list of non-list items is one frame list, a list holding lists is many videos (each a file or a list)."""
    video = value.get("video")
    if video is not None:
        many = isinstance(video, list | tuple) and any(isinstance(v, list | tuple) for v in video)
        for i, v in enumerate(video if many else [video]):
            add_video(v, field=f"{field}.video[{i}]" if many else f"{field}.video", side=side)
    image = value.get("image")
    images = list(image) if isinstance(image, list | tuple) else ([] if image is None else [image])
    for i, img in enumerate(images):
        side.image_refs.append((img, f"{field}.image[{i}]" if isinstance(image, list | tuple) else f"{field}.image"))
    text = value.get("text")
    if text is not None:
        side.texts.append(_text(text, field=f"{field}.text"))
    if not side.has_media and not side.texts:
        raise InvalidInputError(f'{field}: no "text", "image" or "video"; {WHAT_SIDE}', field=field)
    if not side.has_media:
        side.echo = {"text": side.texts[0], "multi_modal": None}
    else:
        videos = (video if isinstance(video, list | tuple) and any(isinstance(v, list | tuple) for v in video)
                  else [] if video is None else [video])
        parts: list[dict[str, Any]] = [{"type": "video", "video": v} for v in videos]
        parts += [{"type": "image", "image": img} for img in images]
        parts += [{"type": "text", "text": t} for t in side.texts]
        side.echo = {"text": None, "multi_modal": parts}
    return side


def part_document(part: Any, *, field: str) -> Side:
    side = Side(image_refs=[], texts=[], echo={})
    parse_part(part, field=field, side=side)
    if side.texts:
        side.echo = {"text": side.texts[0], "multi_modal": None}
    else:
        side.echo = {"text": None, "multi_modal": [part]}
    return side


def parse_messages(messages: Any) -> Side:
    if not isinstance(messages, list | tuple) or not messages:
        raise InvalidInputError(
            'messages: expected a non-empty list like [{"role": "user", "content": [...]}]', field="messages"
        )
    side = Side(image_refs=[], texts=[], echo={})
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
        part_side = Side(image_refs=[], texts=[], echo={})
        parse_content(content, field=f"{fld}.content", side=part_side)
        side.image_refs += part_side.image_refs
        side.video_refs += part_side.video_refs
        side.texts += part_side.texts
        all_parts += [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    if not side.has_media and len(side.texts) == 1:
        side.echo = {"text": side.texts[0], "multi_modal": None}
    else:
        side.echo = {"text": None, "multi_modal": all_parts}
    return side


__all__ = ["SIDE_KEYS", "WHAT_SIDE", "ParsedInput", "Side", "VideoRef", "add_video", "is_image_object",
           "parse_part", "parse_content", "parse_side", "part_document", "parse_messages"]
