"""The HTTP/1.1 connection protocol the server runs under uvicorn: uvicorn's own, plus a header deadline.

uvicorn times out an idle keep-alive connection only *after* a response, and its timer is cancelled by
the first byte of the next request; a connection that sends part of a request head and stalls (or
trickles one byte at a time) is never closed, and with httptools the head it has sent is buffered
without bound. Here every connection must complete each request head within ``header_timeout_s`` of
the connection opening or of the previous response, and in at most ``max_header_bytes``; otherwise it
gets a JSON 408 / 431 and is closed. The deadline is total (not reset per byte), so trickling does not
extend it. A request whose head is complete is never cut by this timer (the body has its own deadline,
``BodyLimitMiddleware``; the model may take as long as it takes).

Shutdown answers every request that reached a connection. uvicorn closes a connection with no request in
progress at once, and the kernel resets a connection closed with unread bytes: a keep-alive client's next
request, or the first of a connection accepted just before, already on its way, got no answer (2 of 3 SIGTERM
runs under load lost one). Here such a connection stays open ``shutdown_grace_s`` for a request that is on its
way (a head already begun keeps its header deadline); one that arrives is answered with ``connection: close``.
``DrainingServer`` also takes over the connections the kernel accepted but the event loop had not yet picked up
when the listener closes (closing it resets them).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

import uvicorn

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # no httptools: uvicorn's pure-Python h11 protocol
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]


#: How long a connection with no request in progress stays open once shutdown begins, for a request already on
#: its way (loopback delivers in microseconds; a client across a network within its round trip).
SHUTDOWN_GRACE_S = 1.0


def _error(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    return head + body


class _DeadlineProtocol(_Base):  # type: ignore[misc, valid-type]
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
    on_shutdown: Any = None  # called (on the event loop) when uvicorn starts shutting down

    def shutdown(self) -> None:
        hook = type(self).on_shutdown
        if hook is not None:
            hook()
        self._vl_stopping = True
        if self._vl_in_flight():
            super().shutdown()  # uvicorn: this request is answered, then the connection closes
        elif self._vl_head_bytes == 0:  # idle: wait for a request on its way (see the module docstring)
            self._vl_arm(self.shutdown_grace_s)
        # else part of a head is here: it completes within its header deadline and is answered, then closed

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self._vl_timer: asyncio.TimerHandle | None = None
        self._vl_head_bytes = 0
        self._vl_stopping = False
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
            if self._vl_stopping:
                self.cycle.keep_alive = False  # a request that came during shutdown: answered, then closed
            return
        if self._vl_stopping and self._vl_head_bytes == 0 and data:
            self._vl_arm()  # a request began within the shutdown grace: it gets the whole header deadline
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

    def _vl_arm(self, seconds: float | None = None) -> None:
        self._vl_disarm()
        self._vl_timer = self.loop.call_later(self.header_timeout_s if seconds is None else seconds,
                                              self._vl_expired)

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


def http_protocol(*, header_timeout_s: float, max_header_bytes: int, on_shutdown: Any = None,
                  shutdown_grace_s: float = SHUTDOWN_GRACE_S) -> type:
    """The protocol class to pass as ``uvicorn.run(..., http=...)``."""
    return type("VlrankHTTPProtocol", (_DeadlineProtocol,),
                {"header_timeout_s": float(header_timeout_s), "max_header_bytes": int(max_header_bytes),
                 "shutdown_grace_s": float(shutdown_grace_s),
                 "on_shutdown": staticmethod(on_shutdown) if on_shutdown is not None else None})


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` that, as shutdown begins, takes over the connections waiting in the listener's accept
    queue (at most ``backlog``) before the listener closes, so they drain like every other connection."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.force_exit:
            await self.adopt_pending()
        await super().shutdown(sockets)

    async def adopt_pending(self) -> int:
        """Accept every connection waiting in the listeners' queues, close the listeners, and serve those
        connections (shutdown() calls this first); how many were taken over. Call on the server's loop."""
        loop = asyncio.get_running_loop()
        config = self.config

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(config=config, server_state=self.server_state,
                                              app_state=self.lifespan.state)

        accepted: list[socket.socket] = []
        for server in self.servers:
            if not server.is_serving():  # closed already (uvloop's has no sockets then)
                continue
            for listener in server.sockets:
                # A duplicate descriptor of the (non-blocking) listener: accept() without asyncio's reader,
                # in one synchronous pass, so nothing else runs between the last accept and the close.
                with socket.socket(fileno=os.dup(listener.fileno())) as dup:
                    dup.setblocking(False)
                    while len(accepted) < config.backlog:
                        try:
                            accepted.append(dup.accept()[0])
                        except ConnectionAbortedError:  # that client is gone already
                            continue
                        except OSError:  # the queue is empty (EAGAIN), or no descriptor is left: stop
                            break
            server.close()  # the listener is closed now; uvicorn's own close below finds it closed
        for conn in accepted:
            try:
                await loop.connect_accepted_socket(protocol, conn)
            except OSError:  # the client left meanwhile
                conn.close()
        return len(accepted)


def uvicorn_options(app: Any, settings: Any) -> dict[str, Any]:
    """The uvicorn keyword arguments that enforce ``settings`` (a ``ServerSettings``) for ``app`` (from
    ``create_app``): the header deadline protocol, the keep-alive timeout, the head size cap of h11, and a
    graceful-shutdown timeout past the drain deadline (so the app answers every request itself)."""
    state = app.state.vlrank
    return {
        "http": http_protocol(header_timeout_s=settings.header_timeout_s, max_header_bytes=settings.max_header_bytes,
                              on_shutdown=state.begin_drain,
                              shutdown_grace_s=min(SHUTDOWN_GRACE_S, settings.drain_timeout_s)),
        "timeout_keep_alive": settings.keep_alive_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_graceful_shutdown": settings.drain_timeout_s + 5,
    }


__all__ = ["DrainingServer", "http_protocol", "uvicorn_options"]
