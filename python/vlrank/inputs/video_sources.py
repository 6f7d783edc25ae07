"""Video sources: a video file (``video_url`` part) or a frame list (``video`` part) -> one ``VideoInput``.

A video file may be a ``data:video/<fmt>;base64,...`` URL, an ``http(s)://`` URL (fetched under the
``FetchPolicy`` with its own cap, ``max_video_bytes``), and in the library a ``file://`` URL, a path or the
container bytes; it is held as bytes, so the same video is recognised by its digest. A frame list is a
non-empty list whose frames are any image source ``resolve_image`` accepts (each under ``max_bytes``).

Per-part options (the qwen-vl-utils element keys): ``fps`` and ``max_frames`` (files only: a frame list is
subsampled to 64 frames by the official code, whatever they say), ``min_pixels`` and ``total_pixels``.
Nothing is decoded here (the container is only sniffed from its first bytes: see ``vlrank.inputs.video``);
``vlrank.engine.videos`` probes the header and plans the tokens. Options are range-checked as numbers
(``OPTION_RANGES``) before anything converts them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlrank.errors import ImageTooLargeError, InvalidInputError
from vlrank.inputs.http import fetch_http
from vlrank.inputs.policy import FetchPolicy
from vlrank.inputs.sources import ImageSource, data_url_bytes, file_url_path, read_local
from vlrank.inputs.video import check_container

OPTION_KEYS = ("fps", "max_frames", "min_pixels", "total_pixels")
_FILE_ONLY = ("fps", "max_frames")


@dataclass(frozen=True, eq=False)
class VideoInput:
    """One video of a side: exactly one of ``data`` (container bytes) or ``frames`` (a frame list), the
    part's options (None: the official default) and ``origin``, the field path it came from."""

    data: bytes | None = None
    frames: tuple[ImageSource, ...] = ()
    fps: float | None = None
    max_frames: int | None = None
    min_pixels: int | None = None
    total_pixels: float | None = None
    origin: str = ""

    @property
    def is_frame_list(self) -> bool:
        return self.data is None

    @property
    def options(self) -> tuple[float | None, int | None, int | None, float | None]:
        """(fps, max_frames, min_pixels, total_pixels): with the content, what decides the video's pixels."""
        return (self.fps, self.max_frames, self.min_pixels, self.total_pixels)


#: The accepted range of each option, checked on the number as given (a 310-digit integer or 2**64 is refused
#: before anything converts it to a float or a native integer). Each upper end is where a larger value stops
#: meaning anything vlrank can do: one decode holds at most 768 frames (qwen-vl-utils' FPS_MAX_FRAMES),
#: sampling at or above the stream's own rate keeps every frame (240 fps covers slow-motion phone video), a
#: frame upscaled past the 8192 x 8192 source pixel cap is no frame vlrank decodes, and a total over 18,000
#: frames of 1080p (the decode bound) bounds nothing.
OPTION_RANGES: dict[str, tuple[float, float]] = {
    "fps": (0, 240),  # exclusive of 0
    "max_frames": (2, 768),
    "min_pixels": (1, 8192 * 8192),
    "total_pixels": (0, 18_000 * 1920 * 1080),  # exclusive of 0
}
_WHAT = {"fps": "a number of sampled frames per second in (0, 240] (the official default is 1)",
         "max_frames": "an integer >= 2 and <= 768 (frames go in pairs; the official default is 64)",
         "min_pixels": "a positive integer number of pixels per frame, at most 67,108,864 (8192 x 8192)",
         "total_pixels": "a positive number of pixels for the whole video, at most 37,324,800,000 (18,000 frames "
                         "of 1920 x 1080)"}


def _shown(value: Any) -> str:
    """The value for a message: an integer of many digits by its size, not its 310 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"an integer of {len(str(abs(value)))} digits" if abs(value) < 10**4000 else "a huge integer"
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def check_option(key: str, value: Any, *, field: str) -> int | float:
    """``value`` of the video option ``key`` if it is a number in ``OPTION_RANGES[key]`` (an integer for
    max_frames and min_pixels), else an InvalidInputError naming ``field``. Comparisons are on the number
    itself (Python compares int and float exactly), so nothing overflows before the range is known."""
    integral = key in ("max_frames", "min_pixels")
    lo, hi = OPTION_RANGES[key]
    ok = not isinstance(value, bool) and isinstance(value, int if integral else (int, float))
    if ok and isinstance(value, float):
        ok = math.isfinite(value)
    if ok:
        ok = (lo <= value <= hi) if integral else (lo < value <= hi)
    if not ok:
        raise InvalidInputError(f"{field}: got {_shown(value)}; pass {_WHAT[key]}", field=field)
    return float(value) if key in ("fps", "total_pixels") else int(value)


def video_options(part: Mapping[str, Any], *, field: str, frame_list: bool) -> dict[str, Any]:
    """The part's validated options; each bad one is an InvalidInputError naming ``field.<key>``."""
    out: dict[str, Any] = {}
    for key in OPTION_KEYS:
        value = part.get(key)
        if value is None:
            continue
        fld = f"{field}.{key}"
        if frame_list and key in _FILE_ONLY:
            raise InvalidInputError(
                f"{fld}: {key} applies to video files; a frame list is used as given (more than 64 frames are "
                "subsampled to 64, as the official code does); drop it, or pass the video file as video_url",
                field=fld)
        out[key] = check_option(key, value, field=fld)
    return out


def _decode_data_url(url: str, *, field: str, max_bytes: int) -> bytes:
    raw = data_url_bytes(url, field=field, max_bytes=max_bytes, media="video",
                         accepted="is not a video; pass data:video/mp4;base64,... (or video/webm, video/x-matroska, ...)",
                         too_large="max_video_bytes caps a video: pass a shorter or smaller one")
    return _capped(raw, field=field, max_bytes=max_bytes)


def _capped(raw: bytes, *, field: str, max_bytes: int) -> bytes:
    if not raw:
        raise InvalidInputError(f"{field}: the video is empty (0 bytes); pass a complete video file", field=field)
    if len(raw) > max_bytes:
        raise ImageTooLargeError(f"{field}: the video is {len(raw)} bytes, over the {max_bytes}-byte video cap "
                                 "(max_video_bytes); pass a shorter or smaller video", field=field)
    return raw


def _read_file(path: str | Path, *, field: str, policy: FetchPolicy) -> bytes:
    raw = read_local(path, cap=policy.max_video_bytes, what="video", field=field, policy=policy)
    return _capped(raw, field=field, max_bytes=policy.max_video_bytes)


def resolve_video_file(value: Any, *, field: str, policy: FetchPolicy) -> bytes:
    """The container bytes of a video file source (see the module docstring), under ``policy``; bytes that
    are no accepted container (``vlrank.inputs.video.ACCEPTED_CONTAINERS``) are refused here, at once."""
    raw = _video_bytes(value, field=field, policy=policy)
    check_container(raw, name=field)
    return raw


def _video_bytes(value: Any, *, field: str, policy: FetchPolicy) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return _capped(bytes(value), field=field, max_bytes=policy.max_video_bytes)
    if isinstance(value, Path):
        return _read_file(value, field=field, policy=policy)
    if not isinstance(value, str):
        raise InvalidInputError(f"{field}: cannot use a {type(value).__name__} as a video; pass a URL string "
                                "(data:video/...;base64, http(s)://, file://), a path or the file's bytes", field=field)
    if not value.strip():
        raise InvalidInputError(f"{field}: video URL is empty; pass a data:, http(s):// or file:// URL", field=field)
    scheme = value.split(":", 1)[0].lower() if ":" in value else ""
    if scheme == "data":
        return _decode_data_url(value, field=field, max_bytes=policy.max_video_bytes)
    if scheme in ("http", "https"):
        raw = fetch_http(value, field=field, policy=policy, max_bytes=policy.max_video_bytes, what="video")
        return _capped(raw, field=field, max_bytes=policy.max_video_bytes)
    if scheme == "file":
        return _read_file(file_url_path(value, field=field), field=field, policy=policy)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", value):
        raise InvalidInputError(f"{field}: URL scheme {scheme!r} is not supported; pass data:video/...;base64, "
                                "http(s)://, file:// or a local path", field=field)
    return _read_file(value, field=field, policy=policy)


__all__ = ["OPTION_KEYS", "OPTION_RANGES", "VideoInput", "check_option", "video_options", "resolve_video_file"]
