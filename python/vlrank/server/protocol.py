"""The HTTP/1.1 connection protocol the server runs under uvicorn: uvicorn's own, plus a header deadline.

uvicorn times out an idle keep-alive connection only *after* a response, and its timer is cancelled by
the first byte of the next request; a connection that sends part of a request head and stalls (or
trickles one byte at a time) is never closed, and with httptools the head it has sent is buffered
without bound. Here every connection must complete each request head within ``header_timeout_s`` of
the connection opening or of the previous response, and in at most ``max_header_bytes``; otherwise it
gets a JSON 408 / 431 and is closed. The deadline is total (not reset per byte), so trickling does not
extend it. A request whose head is complete is never cut by this timer (the body has its own deadline,
``BodyLimitMiddleware``; the model may take as long as it takes).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # no httptools: uvicorn's pure-Python h11 protocol
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]


def _error(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    return head + body


class _DeadlineProtocol(_Base):  # type: ignore[misc, valid-type]
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    on_shutdown: Any = None  # called (on the event loop) when uvicorn starts shutting down

    def shutdown(self) -> None:
        hook = type(self).on_shutdown
        if hook is not None:
            hook()
        super().shutdown()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self._vl_timer: asyncio.TimerHandle | None = None
        self._vl_head_bytes = 0
        super().connection_made(transport)
        self._vl_arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._vl_disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._vl_in_flight():
            self._vl_head_bytes = 0  # the head is complete: this timer is done until the response is
            self._vl_disarm()
            return
        self._vl_head_bytes += len(data)
        if self._vl_head_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._vl_refuse(_error(431, "Request Header Fields Too Large",
                                   f"the request head is over {self.max_header_bytes} bytes; send shorter "
                                   "headers and URL", "headers_too_large"))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._vl_head_bytes = 0
            self._vl_arm()

    # ---- the deadline ----------------------------------------------------------------------------
    def _vl_in_flight(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete

    def _vl_arm(self) -> None:
        self._vl_disarm()
        self._vl_timer = self.loop.call_later(self.header_timeout_s, self._vl_expired)

    def _vl_disarm(self) -> None:
        timer = getattr(self, "_vl_timer", None)
        if timer is not None:
            timer.cancel()
            self._vl_timer = None

    def _vl_expired(self) -> None:
        self._vl_timer = None
        if self._vl_in_flight() or self.transport.is_closing():
            return
        if self._vl_head_bytes == 0:  # an idle connection between requests: close it without a word
            self.transport.close()
            return
        self._vl_refuse(_error(408, "Request Timeout",
                               f"the request head did not arrive within {self.header_timeout_s:g} s; send "
                               "the whole request at once", "request_timeout"))

    def _vl_refuse(self, answer: bytes) -> None:
        self._vl_disarm()
        self.transport.write(answer)
        self.transport.close()


def http_protocol(*, header_timeout_s: float, max_header_bytes: int, on_shutdown: Any = None) -> type:
    """The protocol class to pass as ``uvicorn.run(..., http=...)``."""
    return type("VlrankHTTPProtocol", (_DeadlineProtocol,),
                {"header_timeout_s": float(header_timeout_s), "max_header_bytes": int(max_header_bytes),
                 "on_shutdown": staticmethod(on_shutdown) if on_shutdown is not None else None})


def uvicorn_options(app: Any, settings: Any) -> dict[str, Any]:
    """The uvicorn keyword arguments that enforce ``settings`` (a ``ServerSettings``) for ``app`` (from
    ``create_app``): the header deadline protocol, the keep-alive timeout, the head size cap of h11, and a
    graceful-shutdown timeout past the drain deadline (so the app answers every request itself)."""
    state = app.state.vlrank
    return {
        "http": http_protocol(header_timeout_s=settings.header_timeout_s, max_header_bytes=settings.max_header_bytes,
                              on_shutdown=state.begin_drain),
        "timeout_keep_alive": settings.keep_alive_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_graceful_shutdown": settings.drain_timeout_s + 5,
    }


__all__ = ["http_protocol", "uvicorn_options"]
