"""Fetching an http(s) image under a ``FetchPolicy``: checked addresses, redirects re-checked hop by hop,
one total deadline and a byte cap. Proxy environment variables are ignored: the address that was
checked (``policy.resolve_checked``) is the one connected to.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse

from vlrank.errors import ImageFetchError, ImageTooLargeError, InvalidInputError
from vlrank.inputs.policy import FetchPolicy, resolve_checked

_MAX_REDIRECTS = 5
_CHUNK = 64 * 1024

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


def split_http_url(url: str, *, field: str, redirected_from: str | None = None) -> tuple[urllib.parse.SplitResult, int]:
    """Split an http(s) URL and return it with its port; every malformation is a typed error naming ``field``.

    ``urlsplit`` raises a bare ``ValueError`` for a broken IPv6 literal and ``SplitResult.port`` for a
    port that is not a number in 1..65535; ``http.client`` refuses control characters in the target the
    same way. All of them are caught here, so a URL (or a redirect ``Location``) can only fail typed:
    ``InvalidInputError`` for the caller's own URL, ``ImageFetchError`` for a bad redirect target.
    """
    def bad(why: str) -> InvalidInputError:
        if redirected_from is not None:
            return ImageFetchError(
                f"{field}: {redirected_from!r} redirected to an invalid URL {url!r} ({why}); pass a URL whose "
                "redirects lead to an http(s) image",
                field=field,
            )
        return InvalidInputError(
            f"{field}: invalid URL {url!r} ({why}); pass http(s)://host[:port]/path with a port in 1..65535",
            field=field,
        )

    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise bad("it contains whitespace or control characters; percent-encode them")
    try:
        parts = urllib.parse.urlsplit(url)
        explicit_port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise bad(str(exc)) from exc
    if parts.scheme not in ("http", "https") or not host:
        if redirected_from is not None:
            raise ImageFetchError(
                f"{field}: {redirected_from!r} redirected to {url!r}; only http(s) URLs with a host are fetched",
                field=field,
            )
        raise bad("only http(s) URLs with a host are fetched")
    if explicit_port == 0:
        raise bad("port 0 is not a port")
    return parts, explicit_port or (443 if parts.scheme == "https" else 80)


def _connect(
    parts: urllib.parse.SplitResult, port: int, addrs: list[str], *, remaining: float, field: str, url: str
) -> http.client.HTTPConnection:
    """Connect to the first reachable checked address (never re-resolving the host name)."""
    host = parts.hostname or ""
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


def fetch_http(url: str, *, field: str, policy: FetchPolicy, max_bytes: int | None = None,
               what: str = "image") -> bytes:
    """GET an http(s) URL under ``policy``: checked addresses, re-checked redirects, total timeout, byte cap
    (``max_bytes``, default ``policy.max_bytes``; ``what`` names the thing in errors and the Accept header)."""
    cap = policy.max_bytes if max_bytes is None else max_bytes
    deadline = time.monotonic() + policy.timeout_s
    current = url
    previous: str | None = None
    for _hop in range(_MAX_REDIRECTS + 1):
        parts, port = split_http_url(current, field=field, redirected_from=previous)
        addrs = resolve_checked(parts.hostname, port, field=field, policy=policy)
        conn = _connect(parts, port, addrs, remaining=_remaining(deadline, field, url), field=field, url=url)
        try:
            target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            try:
                conn.request("GET", target, headers={"User-Agent": "vlrank", "Accept": f"{what}/*"})
                resp = conn.getresponse()
            except TimeoutError as exc:
                raise ImageFetchError(
                    f"{field}: fetching {url!r} timed out after {policy.timeout_s} s; pass a faster URL or raise "
                    "timeout_s",
                    field=field,
                ) from exc
            except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: http.client.InvalidURL
                raise ImageFetchError(f"{field}: fetching {url!r} failed ({exc}); pass a reachable URL", field=field) from exc
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise ImageFetchError(f"{field}: {url!r} redirected without a Location", field=field)
                previous = current
                try:
                    current = urllib.parse.urljoin(current, location)
                except ValueError as exc:  # a broken IPv6 literal in Location
                    raise ImageFetchError(
                        f"{field}: {url!r} redirected to an invalid URL {location!r} ({exc}); pass a URL whose "
                        "redirects lead to an http(s) image",
                        field=field,
                    ) from exc
                continue
            if resp.status != 200:
                raise ImageFetchError(
                    f"{field}: {url!r} answered HTTP {resp.status} {resp.reason}; pass a URL that serves the image",
                    field=field,
                )
            return _read_capped(resp, conn, deadline=deadline, field=field, url=url, max_bytes=cap, what=what)
        finally:
            conn.close()
    raise ImageFetchError(f"{field}: {url!r} redirected more than {_MAX_REDIRECTS} times; pass the final URL", field=field)


def _remaining(deadline: float, field: str, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ImageFetchError(f"{field}: fetching {url!r} timed out; pass a faster URL or raise timeout_s", field=field)
    return left


def _read_capped(resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, *, deadline: float, field: str,
                 url: str, max_bytes: int, what: str = "image") -> bytes:
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ImageTooLargeError(
            f"{field}: {url!r} announces {length} bytes, over the {max_bytes}-byte cap; pass a smaller {what}",
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
                f"{field}: {url!r} sent more than the {max_bytes}-byte cap; pass a smaller {what}", field=field
            )


__all__ = ["fetch_http", "split_http_url"]
