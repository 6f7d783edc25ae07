"""Helpers for the server tests (owner: server): a real uvicorn server on 127.0.0.1 in a thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import uvicorn


class LiveServer:
    """Runs ``app`` with uvicorn on an ephemeral 127.0.0.1 port; ``url`` is its base URL."""

    def __init__(self, app: Any, *, ready_timeout: float = 120.0, wait_ready: bool = True) -> None:
        self.app = app
        self.ready_timeout = ready_timeout
        self.wait_ready = wait_ready
        # uvicorn binds port 0 itself: a socket handed in via sockets=[...] is accepted from without
        # TCP_NODELAY, which adds a ~40 ms delayed-ACK stall to every response.
        from vlrank.server import DrainingServer, uvicorn_options

        # The same connection protocol, timeouts and shutdown drain as `vlrank serve`.
        options = uvicorn_options(app, app.state.vlrank.settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", backlog=2048,
                                **options)
        self.server = DrainingServer(config)
        self.port = 0
        self.url = ""
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 30 s")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if self.wait_ready:
            self.until_healthy(self.ready_timeout)
        return self

    def until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = httpx.get(self.url + "/health", timeout=5)
            if last.status_code == 200:
                return
            if last.json().get("status") == "failed":
                raise RuntimeError(f"models failed to load: {last.json()}")
            time.sleep(0.05)
        raise RuntimeError(f"server not healthy within {timeout} s: {last and last.text}")

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("uvicorn did not shut down")

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
