"""Raw HTTP/1.1 clients for the drain tests (test_server_drain.py): they record exactly what a connection got, so
"the server closed it with no answer" is told apart from "the port refused the connection" and from an answer.

Outcomes: ``refused`` (connect failed: the listener is closed, no request was accepted), ``answer`` (a whole
response: its status and body), ``lost`` (the connection was open and the request sent, then it closed or reset
before a whole response came: what must never happen during a drain)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass
class Outcome:
    kind: str  # "answer" | "lost" | "refused"
    status: int = 0
    body: bytes = b""
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def request_bytes(path: str, body: dict[str, Any], *, close: bool) -> bytes:
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n" + ("connection: close\r\n" if close else "") + "\r\n").encode()
    return head + data


def connect(port: int, timeout: float = 30.0) -> socket.socket | None:
    """A connected socket, or None when the port refuses."""
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return None


def read_response(sock: socket.socket) -> Outcome:
    """One whole response from ``sock`` (Content-Length framed, what this server sends), else ``lost``."""
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return Outcome("lost", reason=f"closed after {len(buf)} bytes of the head")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return Outcome("lost", status=status, reason=f"closed after {len(rest)} of {length} body bytes")
            rest += chunk
    except OSError as e:  # reset, timeout
        return Outcome("lost", reason=f"{type(e).__name__}: {e}")
    return Outcome("answer", status=status, body=rest[:length], headers=headers)


def exchange(sock: socket.socket, data: bytes) -> Outcome:
    try:
        sock.sendall(data)
    except OSError as e:
        return Outcome("lost", reason=f"send: {type(e).__name__}: {e}")
    return read_response(sock)


def start_serve(model_args: list[str], *, drain_s: float, log: Path,
                timeout: float = 120.0) -> tuple[subprocess.Popen, str, int]:
    """``vlrank serve`` in its own process on a free port (its output to ``log``: a pipe nobody reads during
    a load would fill and stall the server), waited for until /health is 200; (process, base URL, port)."""
    import os

    out = open(log, "w")  # noqa: SIM115 - the child holds it; closed when the process ends
    proc = subprocess.Popen([sys.executable, "-m", "vlrank.cli", "serve", *model_args, "--port", "0",
                             "--drain-timeout", str(drain_s)],
                            stdout=out, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    out.close()
    url = None
    deadline = time.monotonic() + timeout
    while url is None:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(log.read_text())
        if m := re.search(r"running on (http://127\.0\.0\.1:(\d+))", log.read_text()):
            url = m.group(1)
        else:
            time.sleep(0.1)
    while httpx.get(url + "/health").status_code != 200:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(log.read_text())
        time.sleep(0.1)
    return proc, url, int(url.rsplit(":", 1)[1])


def _worker(kind: str, port: int, data: bytes, keep: bytes, out: list[Outcome], stop: list[bool]) -> None:
    """One client looping requests until the port refuses (or ``stop``): ``fresh`` opens a connection per
    request, ``keepalive`` reuses one until the server says close, ``split`` sends the head and the body of
    each request 20 ms apart (a request being read when the drain starts)."""
    sock = None
    while not stop[0]:
        if sock is None:
            sock = connect(port)
            if sock is None:
                out.append(Outcome("refused"))
                return
        if kind == "split":
            head, _, body = data.partition(b"\r\n\r\n")
            try:
                sock.sendall(head + b"\r\n\r\n")
                time.sleep(0.02)
            except OSError as e:
                out.append(Outcome("lost", reason=f"send: {e}"))
                sock.close()
                sock = None
                continue
            outcome = exchange(sock, body)
        else:
            outcome = exchange(sock, keep if kind == "keepalive" else data)
        out.append(outcome)
        if kind != "keepalive" or outcome.kind != "answer" or outcome.headers.get("connection") == "close":
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def load_across_sigterm(proc: subprocess.Popen, port: int, body: dict[str, Any], *, kinds: dict[str, int],
                        before_s: float, limit_s: float = 60.0) -> list[Outcome]:
    """Clients of ``kinds`` (kind -> how many) loop ``body`` to /v1/rerank; SIGTERM after ``before_s``;
    every outcome until each client is refused by the closed port."""
    import signal
    import threading

    data = request_bytes("/v1/rerank", body, close=True)
    keep = request_bytes("/v1/rerank", body, close=False)
    outs: list[list[Outcome]] = []
    stop = [False]
    threads = []
    for kind, n in kinds.items():
        for _ in range(n):
            outs.append([])
            threads.append(threading.Thread(target=_worker, args=(kind, port, data, keep, outs[-1], stop), daemon=True))
    for t in threads:
        t.start()
    time.sleep(before_s)
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + limit_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stop[0] = True
    for t in threads:
        t.join(5)
    return [o for out in outs for o in out]
