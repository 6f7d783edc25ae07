"""Pure ASGI middleware: request body cap and request metrics (no BaseHTTPMiddleware: it buffers and
breaks disconnect detection)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics


class BodyTooLargeError(HTTPException):
    """Raised from inside the body read (chunked uploads); FastAPI re-raises HTTPExceptions as they are.
    The rest of the body is never read, so the connection closes with the answer: kept alive, the unread
    bytes would be parsed as the next request's head."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over this server's limit of {limit} bytes; send less "
                              "(e.g. fewer documents, smaller or remote images)", headers={"Connection": "close"})


class BodyTimeoutError(HTTPException):
    """The body did not arrive within the deadline (a stalled or trickling upload)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"the request body did not arrive within {timeout_s:g} s; send the whole body "
                              "at once (or a smaller one)", headers={"Connection": "close"})


def _too_large_body(limit: int) -> bytes:
    return json.dumps({"error": {
        "message": f"the request body is over this server's limit of {limit} bytes; send less (e.g. fewer "
                   "documents, smaller or remote images)",
        "type": "invalid_request_error", "param": None, "code": "request_too_large"}}).encode()


class BodyLimitMiddleware:
    """413 for a body over ``max_body_bytes``: at once from Content-Length, else while it streams in;
    408 when the whole body has not arrived ``body_timeout_s`` after the request head (one total
    deadline, so a trickling client cannot hold a connection and a parse slot open)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float = 60.0) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > self.limit:
            if headers.get(b"expect", b"").lower() != b"100-continue":  # such a client sends no body unasked
                await self._discard_body(receive, declared)
            await _send_json(send, 413, _too_large_body(self.limit))
            return
        seen = 0
        limit = self.limit
        timeout_s = self.body_timeout_s
        deadline = time.monotonic() + timeout_s
        body_done = False

        async def counted() -> Message:
            nonlocal seen, body_done
            if body_done:  # only the disconnect is left to hear about: no deadline on that
                return await receive()
            try:
                message = await _within(receive(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise BodyTimeoutError(timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, counted, send)

    async def _discard_body(self, receive: Receive, declared: int) -> None:
        """Read and drop an oversize body before answering 413, up to ``2 * max_body_bytes`` and 5 s: a client
        such as Python's http.client writes its whole body before it reads, and a socket closed on unread
        data is reset, so the 413 would be lost. Past the bound the answer goes anyway and the connection
        closes (as nginx's lingering close does)."""
        budget = min(declared, 2 * self.limit)
        deadline = time.monotonic() + _DISCARD_S
        read = 0
        while read < budget:
            try:
                message = await _within(receive(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                return
            if message["type"] != "http.request":
                return
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


_DISCARD_S = 5.0


async def _within(awaitable: Any, seconds: float) -> Any:
    """``await awaitable`` for at most ``seconds`` (asyncio.timeout where there is one: no extra task per
    receive on the request path)."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, max(0.0, seconds))
    async with timeout(max(0.0, seconds)):
        return await awaitable


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    """``Authorization: Bearer <key>`` on every path under ``protected_prefix`` and on each of ``protected_paths``
    (exact: TEI's ``POST /`` is protected, the paths below ``/`` such as ``/health`` are not); 401 JSON otherwise.

    The key is compared with ``hmac.compare_digest`` on bytes (constant time); header bytes are taken as
    sent (latin-1), so a non-ASCII key must be configured as the same bytes.
    """

    def __init__(self, app: ASGIApp, *, api_key: str | None, protected_prefix: tuple[str, ...],
                 protected_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.key = api_key.encode("utf-8") if api_key is not None else None
        self.prefix = protected_prefix
        self.paths = protected_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if self.key is None or scope["type"] != "http" or not (path.startswith(self.prefix) or path in self.paths):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
                break
        if given and hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {
            "message": "missing or wrong API key; send 'Authorization: Bearer <key>'",
            "type": "authentication_error", "param": None, "code": "invalid_api_key"}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Counts answers by route template / method / status and observes latency per route."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, known_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.known = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        t0 = time.perf_counter()

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route: Any = scope.get("route")
            # The route *template*, never the raw path: fuzzers and scanners must not grow the label set.
            # (Answers given before routing, e.g. 401 / 413, are labelled with the path when it is a real one.)
            path = scope.get("path", "")
            label = getattr(route, "path", None) or (path if path in self.known else "unmatched")
            self.metrics.requests.labels(label, scope.get("method", ""), str(status["code"])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - t0)
