"""Image sources: every way a caller can hand vlrank an image -> one `ImageSource`.

Accepted sources (``resolve_image``):

* ``data:image/<fmt>;base64,...`` URLs — strict base64 (no whitespace, correct padding), a MIME allow-list;
* ``file://`` URLs and plain filesystem paths — only when ``FetchPolicy.allow_local_files`` (the library
  default; the HTTP server turns it off so a request can never read the server's disk);
* ``http://`` / ``https://`` URLs — fetched with a total timeout and a byte cap; every address the host
  resolves to must be public unless ``FetchPolicy.allow_private_urls``; redirects are re-checked hop by hop;
* raw encoded ``bytes`` / ``bytearray`` / ``memoryview``;
* ``PIL.Image.Image`` (Pillow is optional and imported lazily) and uint8 numpy arrays.

Only the container format is sniffed here (magic bytes), so a wrong file fails early with the field named;
the native decoder does the real decode.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlrank.errors import ImageDecodeError, ImageFetchError, ImageTooLargeError, InvalidInputError
from vlrank.inputs.http import fetch_http
from vlrank.inputs.policy import FetchPolicy

# MIME types a data URL may declare. Anything else is refused before decoding a single byte.
_ALLOWED_MIME = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/x-bmp",
        "image/x-ms-bmp",
        "image/tiff",
        "image/tif",
    }
)
_SUPPORTED = "PNG, JPEG, WebP, GIF, BMP or TIFF"
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<payload>.*)\Z", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class ImageSource:
    """One resolved image: exactly one of ``data`` (encoded bytes) or ``array`` (uint8 pixels).

    ``array`` has shape (H, W) (grey), (H, W, 3) (RGB) or (H, W, 4) (RGBA, composited on white by the
    native preprocessor). ``format`` is the sniffed container format of ``data`` ("png", "jpeg", "webp",
    "gif", "bmp", "tiff") or None for arrays. ``origin`` names where it came from (the field path).
    """

    data: bytes | None = None
    array: np.ndarray | None = None
    format: str | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        if (self.data is None) == (self.array is None):
            raise InvalidInputError("an ImageSource holds exactly one of data= or array=", field=self.origin or None)

    @property
    def payload(self) -> bytes | np.ndarray:
        """What the native preprocessor takes: the encoded bytes or the pixel array."""
        return self.data if self.data is not None else self.array  # type: ignore[return-value]


def sniff_format(data: bytes) -> str | None:
    """Return the image container format from its magic bytes, or None if it is not one vlrank reads."""
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def image_from_bytes(data: bytes | bytearray | memoryview, *, field: str) -> ImageSource:
    """Wrap encoded image bytes after checking they are non-empty and of a supported format."""
    raw = bytes(data)
    if not raw:
        raise ImageDecodeError(f"{field}: image bytes are empty; pass the encoded {_SUPPORTED} file", field=field)
    fmt = sniff_format(raw)
    if fmt is None:
        raise ImageDecodeError(
            f"{field}: not a supported image (first bytes {raw[:8]!r}); pass an encoded {_SUPPORTED} image",
            field=field,
        )
    return ImageSource(data=raw, format=fmt, origin=field)


def image_from_array(array: Any, *, field: str) -> ImageSource:
    """Validate a uint8 pixel array of shape (H, W), (H, W, 3) or (H, W, 4) and wrap it."""
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise InvalidInputError(
            f"{field}: image array has dtype {arr.dtype}; pass uint8 pixels 0..255 (e.g. arr.astype(np.uint8))",
            field=field,
        )
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise InvalidInputError(
            f"{field}: image array has shape {arr.shape}; pass (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA",
            field=field,
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"{field}: image array is empty {arr.shape}; pass at least 1x1 pixels", field=field)
    return ImageSource(array=np.ascontiguousarray(arr), origin=field)


def image_from_pil(img: Any, *, field: str) -> ImageSource:
    """Convert a PIL image by the reference colour rule: RGBA kept (composited later), L kept, else RGB.

    qwen-vl-utils composites only a true RGBA image on white; palette+transparency and LA lose their alpha
    through ``convert("RGB")``, exactly as here.
    """
    try:
        img.load()
        if img.mode in ("RGBA", "L", "RGB"):
            arr = np.asarray(img, dtype=np.uint8)
        else:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"{field}: PIL could not load the image ({exc}); pass a readable image", field=field) from exc
    return image_from_array(arr, field=field)


def _is_pil_image(value: Any) -> bool:
    # Lazy: never import Pillow just to learn a value is not a PIL image.
    mod = type(value).__module__
    if not mod.startswith("PIL."):
        return False
    from PIL import Image

    return isinstance(value, Image.Image)


def data_url_bytes(url: str, *, field: str, max_bytes: int, media: str, accepted: str,
                   too_large: str) -> bytes:
    """The payload of a ``data:<media>/<fmt>;base64,<payload>`` URL, decoded strictly (no whitespace, exact
    padding). ``media``: "image" or "video"; ``accepted``: what to tell a caller whose media type is refused
    (None of it accepted for that media: the message of ``accepted``); ``too_large``: the fix for an
    oversized payload. The payload size is checked before anything is allocated for it."""
    example = "data:image/png" if media == "image" else "data:video/mp4"
    m = _DATA_URL.match(url)
    if m is None:
        raise InvalidInputError(f"{field}: malformed data URL; pass {example};base64,<base64 bytes>", field=field)
    mime = m["mime"].strip().lower()
    params = [p.strip().lower() for p in m["params"].split(";") if p.strip()]
    ok = mime in _ALLOWED_MIME if media == "image" else mime.startswith("video/")
    if not ok:
        raise InvalidInputError(f"{field}: data URL media type {mime or '(none)'!r} {accepted}", field=field)
    if "base64" not in params:
        raise InvalidInputError(f"{field}: data URL is not base64-encoded; pass data:{mime};base64,<...>", field=field)
    payload = m["payload"]
    # 4 base64 chars carry 3 bytes: refuse before allocating anything for an oversized payload.
    if len(payload) // 4 * 3 > max_bytes + 2:
        raise ImageTooLargeError(f"{field}: data URL holds about {len(payload) // 4 * 3} bytes, over the "
                                 f"{max_bytes}-byte cap; {too_large}", field=field)
    # b64decode(validate=True) alone still accepts surplus '=' after complete data (Python < 3.13), so the
    # shape is checked first: standard alphabet only, padding only at the end, length a multiple of 4.
    problem = None
    raw = b""
    if _B64.fullmatch(payload) is None:
        problem = "characters outside A-Z a-z 0-9 + / or misplaced '=' padding"
    elif len(payload) % 4:
        problem = f"length {len(payload)} is not a multiple of 4 (missing or extra padding)"
    else:
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            problem = str(exc)
    if problem is not None:
        raise InvalidInputError(
            f"{field}: invalid base64 in data URL ({problem}); pass standard base64 (A-Z a-z 0-9 + /, '=' "
            "padding, no whitespace)",
            field=field,
        )
    return raw


def decode_data_url(url: str, *, field: str, max_bytes: int) -> ImageSource:
    """Decode a ``data:image/<fmt>;base64,<payload>`` URL strictly (no whitespace, exact padding)."""
    raw = data_url_bytes(url, field=field, max_bytes=max_bytes, media="image",
                         accepted="is not accepted; pass image/png, image/jpeg, image/webp, image/gif, image/bmp or "
                                  "image/tiff",
                         too_large="pass a smaller (downscaled or recompressed) image")
    if len(raw) > max_bytes:
        raise ImageTooLargeError(
            f"{field}: image is {len(raw)} bytes, over the {max_bytes}-byte cap; pass a smaller image", field=field
        )
    return image_from_bytes(raw, field=field)


def read_local(path: str | Path, *, cap: int, what: str, field: str, policy: FetchPolicy) -> bytes:
    """The bytes of a local ``what`` file ("image", "video"), read under ``cap`` bytes (at most cap + 1 are
    read, so a huge file or a device never fills memory). Refused unless ``policy.allow_local_files`` (the
    server turns it off: a request never reads the server's disk); a missing path, a directory, an
    unreadable file and one over ``cap`` are errors naming ``field``. Callers judge the bytes (empty, format)."""
    if not policy.allow_local_files:
        raise ImageFetchError(f"{field}: local file paths are not allowed here; pass a data:{what}/...;base64 URL "
                              "or an http(s) URL", field=field)
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(cap + 1)
    except FileNotFoundError as exc:
        raise ImageFetchError(f"{field}: no such {what} file {str(p)!r}; pass an existing path", field=field) from exc
    except IsADirectoryError as exc:
        raise ImageFetchError(f"{field}: {str(p)!r} is a directory; pass the path of one {what} file",
                              field=field) from exc
    except OSError as exc:
        raise ImageFetchError(f"{field}: cannot read {str(p)!r} ({exc.strerror or exc}); pass a readable {what} "
                              "file", field=field) from exc
    if len(raw) > cap:
        raise ImageTooLargeError(f"{field}: file {str(p)!r} is over the {cap}-byte {what} cap; pass a smaller "
                                 f"{what}", field=field)
    return raw


def read_local_file(path: str | Path, *, field: str, policy: FetchPolicy) -> ImageSource:
    """Read an image file from disk (refused unless ``policy.allow_local_files``), at most max_bytes."""
    raw = read_local(path, cap=policy.max_bytes, what="image", field=field, policy=policy)
    return image_from_bytes(raw, field=field)


def file_url_path(url: str, *, field: str) -> str:
    """The local path of a ``file://`` URL (no host, or ``localhost``); anything else names ``field``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # a broken IPv6 literal in the host part
        raise InvalidInputError(f"{field}: invalid file URL {url!r} ({exc}); pass file:///absolute/path", field=field) from exc
    if parts.netloc not in ("", "localhost"):
        raise InvalidInputError(
            f"{field}: file URL names host {parts.netloc!r}; pass file:///absolute/path (no host)", field=field
        )
    return urllib.request.url2pathname(parts.path)


def is_remote_url(value: Any) -> bool:
    """True for an ``http://`` or ``https://`` string (these are worth fetching concurrently)."""
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


def resolve_image(value: Any, *, field: str, policy: FetchPolicy) -> ImageSource:
    """Turn any accepted image source into an ``ImageSource`` (see the module docstring for the list).

    Raises ``InvalidInputError`` (bad type or URL), ``ImageFetchError`` (refused, unreachable, HTTP error,
    timeout), ``ImageTooLargeError`` (byte cap) or ``ImageDecodeError`` (not a supported format), each
    naming ``field``.
    """
    if isinstance(value, str):
        return _resolve_string(value, field=field, policy=policy)
    if isinstance(value, bytes | bytearray | memoryview):
        if len(value) > policy.max_bytes:
            raise ImageTooLargeError(
                f"{field}: image is {len(value)} bytes, over the {policy.max_bytes}-byte cap", field=field
            )
        return image_from_bytes(value, field=field)
    if isinstance(value, np.ndarray):
        return image_from_array(value, field=field)
    if isinstance(value, Path):
        return read_local_file(value, field=field, policy=policy)
    if _is_pil_image(value):
        return image_from_pil(value, field=field)
    raise InvalidInputError(
        f"{field}: cannot use a {type(value).__name__} as an image; pass a URL string (data:, http(s)://, "
        "file://), a path, encoded bytes, a PIL image or a uint8 numpy array",
        field=field,
    )


def _resolve_string(url: str, *, field: str, policy: FetchPolicy) -> ImageSource:
    if not url.strip():
        raise InvalidInputError(f"{field}: image URL is empty; pass a data:, http(s):// or file:// URL", field=field)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return decode_data_url(url, field=field, max_bytes=policy.max_bytes)
    if scheme in ("http", "https"):
        return image_from_bytes(fetch_http(url, field=field, policy=policy), field=field)
    if scheme == "file":
        return read_local_file(file_url_path(url, field=field), field=field, policy=policy)
    # A one-letter "scheme" is a Windows drive (C:\...); anything longer that looks like scheme:// is a URL
    # kind we do not fetch (ftp, s3, oss, ...), reported as such rather than as a missing file.
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", url):
        raise InvalidInputError(
            f"{field}: URL scheme {scheme!r} is not supported; pass data:image/...;base64, http(s)://, file:// "
            "or a local path",
            field=field,
        )
    return read_local_file(url, field=field, policy=policy)


__all__ = [
    "FetchPolicy",
    "ImageSource",
    "sniff_format",
    "resolve_image",
    "decode_data_url",
    "fetch_http",
    "read_local",
    "file_url_path",
    "read_local_file",
    "image_from_bytes",
    "image_from_array",
    "image_from_pil",
    "is_remote_url",
]
