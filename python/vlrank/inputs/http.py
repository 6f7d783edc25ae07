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

from vlrank.errors import ImageFetchError, ImageTooLargeError
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
        addrs = resolve_checked(parts.hostname, port, field=field, policy=policy)
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


__all__ = ["fetch_http"]
