"""Image source resolution: every way a caller can hand vlrank an image -> one `ImageSource`.

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
import http.client
import ipaddress
import re
import socket
import ssl
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any

import numpy as np

from vlrank.errors import ImageDecodeError, ImageFetchError, ImageTooLargeError, InvalidInputError

MiB = 1024 * 1024
_MAX_REDIRECTS = 5
_CHUNK = 64 * 1024

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


@dataclass(frozen=True)
class FetchPolicy:
    """Where images may come from and how much may be read.

    ``allowed_private_hosts`` exempts exact host names (as written in the URL, e.g. an internal image
    service) from the private-address refusal; redirects to any other private host are still refused.
    Proxy environment variables are ignored on purpose: the address that was checked is the one connected.
    """

    allow_local_files: bool = True
    allow_private_urls: bool = False
    timeout_s: float = 10.0
    max_bytes: int = 20 * MiB
    allowed_private_hosts: frozenset[str] = dc_field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise InvalidInputError(
                f"timeout_s must be > 0 seconds, got {self.timeout_s!r}; pass e.g. timeout_s=10.0",
                field="timeout_s",
            )
        if not isinstance(self.max_bytes, int) or self.max_bytes <= 0:
            raise InvalidInputError(
                f"max_bytes must be a positive int, got {self.max_bytes!r}; pass e.g. max_bytes=20 * 1024 * 1024",
                field="max_bytes",
            )
        object.__setattr__(self, "allowed_private_hosts", frozenset(h.lower() for h in self.allowed_private_hosts))


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


def decode_data_url(url: str, *, field: str, max_bytes: int) -> ImageSource:
    """Decode a ``data:image/<fmt>;base64,<payload>`` URL strictly (no whitespace, exact padding)."""
    m = _DATA_URL.match(url)
    if m is None:
        raise InvalidInputError(f"{field}: malformed data URL; pass data:image/png;base64,<base64 bytes>", field=field)
    mime = m["mime"].strip().lower()
    params = [p.strip().lower() for p in m["params"].split(";") if p.strip()]
    if mime not in _ALLOWED_MIME:
        raise InvalidInputError(
            f"{field}: data URL media type {mime or '(none)'!r} is not accepted; pass image/png, image/jpeg, "
            "image/webp, image/gif, image/bmp or image/tiff",
            field=field,
        )
    if "base64" not in params:
        raise InvalidInputError(f"{field}: data URL is not base64-encoded; pass data:{mime};base64,<...>", field=field)
    payload = m["payload"]
    # 4 base64 chars carry 3 bytes: refuse before allocating anything for an oversized payload.
    if len(payload) // 4 * 3 > max_bytes + 2:
        raise ImageTooLargeError(
            f"{field}: data URL holds about {len(payload) // 4 * 3} bytes, over the {max_bytes}-byte cap; "
            "pass a smaller (downscaled or recompressed) image",
            field=field,
        )
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
    if len(raw) > max_bytes:
        raise ImageTooLargeError(
            f"{field}: image is {len(raw)} bytes, over the {max_bytes}-byte cap; pass a smaller image", field=field
        )
    return image_from_bytes(raw, field=field)


def read_local_file(path: str | Path, *, field: str, policy: FetchPolicy) -> ImageSource:
    """Read an image file from disk (refused unless ``policy.allow_local_files``), at most max_bytes."""
    if not policy.allow_local_files:
        raise ImageFetchError(
            f"{field}: local file paths are not allowed here; pass a data:image/...;base64 URL or an "
            "http(s) URL",
            field=field,
        )
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(policy.max_bytes + 1)
    except FileNotFoundError as exc:
        raise ImageFetchError(f"{field}: no such image file {str(p)!r}; pass an existing path", field=field) from exc
    except IsADirectoryError as exc:
        raise ImageFetchError(f"{field}: {str(p)!r} is a directory; pass an image file path", field=field) from exc
    except OSError as exc:
        raise ImageFetchError(f"{field}: cannot read {str(p)!r} ({exc}); pass a readable file", field=field) from exc
    if len(raw) > policy.max_bytes:
        raise ImageTooLargeError(
            f"{field}: file {str(p)!r} is over the {policy.max_bytes}-byte cap; pass a smaller image", field=field
        )
    return image_from_bytes(raw, field=field)


def _file_url_path(url: str, *, field: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidInputError(
            f"{field}: file URL names host {parts.netloc!r}; pass file:///absolute/path (no host)", field=field
        )
    return urllib.request.url2pathname(parts.path)


def _address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # Most specific first: is_private also covers loopback, link-local and unspecified ranges.
    for name in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved", "is_private"):
        if getattr(ip, name):
            return name[3:].replace("_", "-")
    if not ip.is_global:  # e.g. 100.64.0.0/10 shared address space
        return "non-global"
    return None


def _resolve_checked(host: str, port: int, *, field: str, policy: FetchPolicy) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing if any is private (unless allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ImageFetchError(f"{field}: cannot resolve host {host!r} ({exc}); pass a reachable URL", field=field) from exc
    addrs: list[str] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]
        if addr not in addrs:
            addrs.append(addr)
    if not addrs:
        raise ImageFetchError(f"{field}: host {host!r} has no address; pass a reachable URL", field=field)
    if policy.allow_private_urls or host.lower() in policy.allowed_private_hosts:
        return addrs
    for addr in addrs:
        why = _address_refusal(ipaddress.ip_address(addr))
        if why is not None:
            raise ImageFetchError(
                f"{field}: refusing to fetch from {host!r}: it resolves to {why} address {addr}; pass a public "
                "http(s) URL or a data:image/...;base64 URL (private addresses need allow_private_urls=True)",
                field=field,
            )
    return addrs


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address checked beforehand, so a second DNS answer cannot swap in a private one."""

    def __init__(self, host: str, port: int, *, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._pinned_ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._pinned_ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a pre-checked address; the certificate is still verified against the URL's host name."""

    def __init__(self, host: str, port: int, *, ip: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._pinned_ip = ip
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self._pinned_ip, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


def _connect(
    parts: urllib.parse.SplitResult, addrs: list[str], *, remaining: float, field: str, url: str
) -> http.client.HTTPConnection:
    """Connect to the first reachable checked address (never re-resolving the host name)."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    last: Exception | None = None
    for ip in addrs:
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = _PinnedHTTPSConnection(
                host, port, ip=ip, timeout=remaining, context=ssl.create_default_context()
            )
        else:
            conn = _PinnedHTTPConnection(host, port, ip=ip, timeout=remaining)
        try:
            conn.connect()
            return conn
        except OSError as exc:  # includes socket.timeout and ssl errors
            conn.close()
            last = exc
    raise ImageFetchError(f"{field}: cannot connect to {url!r} ({last}); pass a reachable URL", field=field)


def fetch_http(url: str, *, field: str, policy: FetchPolicy) -> bytes:
    """GET an http(s) URL under ``policy``: checked addresses, re-checked redirects, total timeout, byte cap."""
    deadline = time.monotonic() + policy.timeout_s
    current = url
    for _hop in range(_MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageFetchError(
                f"{field}: {'redirected to' if current != url else 'bad URL'} {current!r}; only http(s) URLs with a "
                "host are fetched",
                field=field,
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addrs = _resolve_checked(parts.hostname, port, field=field, policy=policy)
        conn = _connect(parts, addrs, remaining=_remaining(deadline, field, url), field=field, url=url)
        try:
            target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            try:
                conn.request("GET", target, headers={"User-Agent": "vlrank", "Accept": "image/*"})
                resp = conn.getresponse()
            except TimeoutError as exc:
                raise ImageFetchError(
                    f"{field}: fetching {url!r} timed out after {policy.timeout_s} s; pass a faster URL or raise "
                    "timeout_s",
                    field=field,
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise ImageFetchError(f"{field}: fetching {url!r} failed ({exc}); pass a reachable URL", field=field) from exc
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise ImageFetchError(f"{field}: {url!r} redirected without a Location", field=field)
                current = urllib.parse.urljoin(current, location)
                continue
            if resp.status != 200:
                raise ImageFetchError(
                    f"{field}: {url!r} answered HTTP {resp.status} {resp.reason}; pass a URL that serves the image",
                    field=field,
                )
            return _read_capped(resp, conn, deadline=deadline, field=field, url=url, max_bytes=policy.max_bytes)
        finally:
            conn.close()
    raise ImageFetchError(f"{field}: {url!r} redirected more than {_MAX_REDIRECTS} times; pass the final URL", field=field)


def _remaining(deadline: float, field: str, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ImageFetchError(f"{field}: fetching {url!r} timed out; pass a faster URL or raise timeout_s", field=field)
    return left


def _read_capped(resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, *, deadline: float, field: str,
                 url: str, max_bytes: int) -> bytes:
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ImageTooLargeError(
            f"{field}: {url!r} announces {length} bytes, over the {max_bytes}-byte cap; pass a smaller image",
            field=field,
        )
    buf = bytearray()
    while True:
        left = _remaining(deadline, field, url)
        if conn.sock is not None:
            conn.sock.settimeout(left)  # the whole fetch shares one deadline, not one timeout per read
        try:
            chunk = resp.read1(_CHUNK) if hasattr(resp, "read1") else resp.read(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError):
                raise ImageFetchError(
                    f"{field}: fetching {url!r} timed out; pass a faster URL or raise timeout_s", field=field
                ) from exc
            raise ImageFetchError(f"{field}: reading {url!r} failed ({exc})", field=field) from exc
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > max_bytes:
            raise ImageTooLargeError(
                f"{field}: {url!r} sent more than the {max_bytes}-byte cap; pass a smaller image", field=field
            )


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
        return read_local_file(_file_url_path(url, field=field), field=field, policy=policy)
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
    "read_local_file",
    "image_from_bytes",
    "image_from_array",
    "image_from_pil",
    "is_remote_url",
]
