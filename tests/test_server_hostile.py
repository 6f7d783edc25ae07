"""A hostile client against a real server on 127.0.0.1: a slow origin behind JSON-escaped URLs, malformed
URLs and redirect targets, half-open connections, body-parse faults, edited model directories and a
SIGTERM while requests wait. Every answer is checked (status, JSON error shape, the field named)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from server_fixtures import (  # noqa: F401 - fixtures
    AUTH,
    GOLDEN,
    KEY,
    TEXT_RERANK,
    VL_EMBED,
    VL_RERANK,
    exported_models,
    library,
    live,
    make_facades,
    without_id,
)
from server_support import LiveServer

PNG = (GOLDEN / "images" / "rgb_noise_70x50.png").read_bytes()
SLOW_S = 2.0
BAD_URLS = ["http://127.0.0.1:99999/x.png", "http://127.0.0.1:abc/x.png", "http://127.0.0.1:-1/x.png",
            "http://[::1/x", "https://h:65536/"]


def assert_error(response: httpx.Response, status: int, *, param: str | None = ..., code: str | None = ...) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in response.text
    if param is not ...:
        assert err["param"] == param, err
    if code is not ...:
        assert err["code"] == code, err
    return err


# ---- a local origin: slow images and redirects to malformed URLs ----------------------------------------

class _Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server API
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path == "/slow.png":
            time.sleep(SLOW_S)
            body = PNG
        elif self.path.startswith("/to-bad/"):
            self.send_response(302)
            self.send_header("Location", BAD_URLS[int(self.path.rsplit("/", 1)[1])])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        else:
            body = PNG
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def private_live(exported_models) -> Iterator[LiveServer]:
    """A server that may fetch from 127.0.0.1 (so the local origin is really fetched)."""
    from vlrank.server import ServerSettings, create_app

    models = make_facades({VL_RERANK: exported_models[VL_RERANK]})
    app = create_app(models, settings=ServerSettings(api_key=KEY, allow_private_urls=True))
    server = LiveServer(app).start()
    yield server
    server.stop()


def _rerank_body(url_json: str) -> bytes:
    """A rerank request whose one document is an image at ``url_json`` (already JSON-escaped text)."""
    return ('{"model": "%s", "query": "a picture", "documents": [{"content": [{"type": "image_url", '
            '"image_url": {"url": "%s"}}]}]}' % (VL_RERANK, url_json)).encode()


@pytest.mark.parametrize("spelling", [
    "http:\\/\\/{origin}\\/slow.png",          # escaped slashes
    "\\u0068ttp://{origin}/slow.png",          # an escaped letter
    "\\u0048\\u0054\\u0054\\u0050://{origin}/slow.png",  # escaped upper case
])
def test_slow_origin_behind_json_escapes_never_blocks_health(private_live, origin, spelling):
    body = _rerank_body(spelling.format(origin=origin))
    answer: dict[str, httpx.Response] = {}

    def post() -> None:
        answer["r"] = httpx.post(private_live.url + "/v1/rerank", content=body, timeout=60,
                                 headers={**AUTH, "Content-Type": "application/json"})

    worker = threading.Thread(target=post)
    worker.start()
    time.sleep(0.4)  # the fetch is under way (the origin sleeps SLOW_S)
    waits = []
    for _ in range(3):
        t0 = time.perf_counter()
        health = httpx.get(private_live.url + "/health", timeout=10)
        waits.append(time.perf_counter() - t0)
        assert health.status_code == 200
    assert worker.is_alive(), "the request finished before the health checks: the origin was not slow"
    worker.join(60)
    assert max(waits) < 0.5, waits
    r = answer["r"]
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 1


@pytest.mark.parametrize("url", BAD_URLS)
def test_malformed_image_url_is_400_naming_the_field(live, url):
    r = httpx.post(live.url + "/v1/rerank", headers=AUTH, timeout=30, json={
        "model": VL_RERANK, "query": "q",
        "documents": ["d", {"content": [{"type": "image_url", "image_url": {"url": url}}]}]})
    err = assert_error(r, 400, param="documents[1].content[0].image_url.url", code="invalid_value")
    assert "invalid URL" in err["message"]


@pytest.mark.parametrize("index", range(len(BAD_URLS)))
def test_redirect_to_malformed_url_is_400_naming_the_field(private_live, origin, index):
    r = httpx.post(private_live.url + "/v1/rerank", headers=AUTH, timeout=30, json={
        "model": VL_RERANK, "query": {"content": [{"type": "image_url",
                                                   "image_url": {"url": f"http://{origin}/to-bad/{index}"}}]},
        "documents": ["d"]})
    err = assert_error(r, 400, param="query.content[0].image_url.url", code="image_fetch_failed")
    assert "redirected to an invalid URL" in err["message"]


# ---- an edited model directory ------------------------------------------------------------------------

def edited_copy(src: Path, dst: Path, edit) -> Path:
    """A hard-linked copy of an exported directory whose vlrank.json is ``edit(manifest)`` (a new file,
    so the original export is untouched)."""
    import os
    import shutil

    shutil.copytree(src, dst, copy_function=os.link)
    path = dst / "vlrank.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.unlink()
    path.write_text(json.dumps(manifest))
    return dst


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(manifest: dict) -> None:
        node = manifest
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


EDITS = {  # what is edited -> words the error must contain
    "hidden": (_set("dims", "hidden_size", 64), ["dims.hidden_size", "decoder graph"]),
    "deepstack": (_set("dims", "deepstack_layers", 3), ["dims.deepstack_layers"]),
    "pad over vocab": (_set("special_tokens", "image_pad", 151936), ["special_tokens.image_pad", "vocabulary"]),
    "yes id": (_set("special_tokens", "yes", 9694), ["special_tokens.yes", "tokenizer"]),
    "negative id": (_set("special_tokens", "no", -1), ["special_tokens.no"]),
    "vocab": (_set("dims", "vocab_size", 1000), ["vocab"]),
    "output": (_set("decoder", "output", "logits"), ["decoder.output"]),
    "escape": (_set("files", "tokenizer", "../../../../etc/passwd"), ["files.tokenizer", "outside the model directory"]),
    "absolute": (_set("files", "tokenizer", "/etc/passwd"), ["files.tokenizer", "outside the model directory"]),
    "patch": (_set("image", "patch_size", 14), ["pixel_values", "image.patch_size"]),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_edited_model_directory_is_refused_at_load(exported_models, tmp_path, what):
    from vlrank import Reranker
    from vlrank.errors import ModelDirectoryError

    edit, words = EDITS[what]
    model_dir = edited_copy(exported_models[VL_RERANK], tmp_path / "m", edit)
    with pytest.raises(ModelDirectoryError) as info:
        Reranker(str(model_dir)).tower()  # the vision graph is checked when it loads
    message = str(info.value)
    assert info.value.field == "model"
    assert "re-export" in message
    for word in words:
        assert word in message, (word, message)


def test_symlink_out_of_the_model_directory_is_refused(exported_models, tmp_path):
    from vlrank import Reranker
    from vlrank.errors import ModelDirectoryError

    model_dir = edited_copy(exported_models[TEXT_RERANK], tmp_path / "m", lambda m: None)
    (model_dir / "tokenizer.json").unlink()
    (model_dir / "tokenizer.json").symlink_to("/etc/passwd")
    with pytest.raises(ModelDirectoryError, match="files.tokenizer.*outside the model directory.*re-export"):
        Reranker(str(model_dir))


def test_health_shows_names_and_states_only(exported_models, tmp_path, caplog):
    from vlrank.inputs import FetchPolicy
    from vlrank.server import ServerSettings, create_app, spec_from_path

    bad = edited_copy(exported_models[VL_RERANK], tmp_path / "bad", _set("dims", "hidden_size", 64))
    policy = FetchPolicy(allow_local_files=False)
    specs = {"good": spec_from_path("good", exported_models[TEXT_RERANK], policy=policy),
             "bad": spec_from_path("bad", bad, policy=policy)}
    app = create_app(specs, settings=ServerSettings())
    with LiveServer(app, wait_ready=False) as server:
        deadline = time.monotonic() + 120
        while (health := httpx.get(server.url + "/health")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert health.status_code == 503 and health.headers["retry-after"] == "1"
        assert health.json() == {"status": "failed", "models": {"bad": "failed", "good": "ok"}}
        assert str(tmp_path) not in health.text and "re-export" not in health.text
        r = httpx.post(server.url + "/v1/rerank", json={"model": "good", "query": "q", "documents": ["d"]})
        assert_error(r, 503, code="model_load_failed")
        assert str(tmp_path) not in r.text
        # /docs loads its scripts from a CDN: off by default; the schema is still served
        assert httpx.get(server.url + "/docs").status_code == 404
        assert httpx.get(server.url + "/openapi.json").status_code == 200
    assert "dims.hidden_size" in caplog.text  # the reason is in the server log


def test_docs_on_request(exported_models):
    from vlrank.server import ServerSettings, create_app

    app = create_app(make_facades({TEXT_RERANK: exported_models[TEXT_RERANK]}),
                     settings=ServerSettings(docs=True, warmup=False))
    with LiveServer(app) as server:
        docs = httpx.get(server.url + "/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()


# ---- half-open connections ----------------------------------------------------------------------------

HEAD_S = 1.0  # the header / body deadlines of the `quick` server


@pytest.fixture(scope="module")
def quick(exported_models) -> Iterator[LiveServer]:
    """A server with 1 s request-head and body deadlines (the defaults are 10 s and 60 s)."""
    from vlrank.server import ServerSettings, create_app

    app = create_app(make_facades({TEXT_RERANK: exported_models[TEXT_RERANK]}),
                     settings=ServerSettings(header_timeout_s=HEAD_S, body_timeout_s=HEAD_S, warmup=False))
    server = LiveServer(app).start()
    yield server
    server.stop()


def _until_closed(sock, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    import socket

    t0 = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        pytest.fail(f"the server kept the connection open for {limit} s; it sent {data[:200]!r}")
    except ConnectionResetError:  # closed with our unread bytes in its buffer: the kernel sends a reset
        data += b"<reset>"
    return data, time.monotonic() - t0


def _connect(server: LiveServer):
    import socket

    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _json_answer(raw: bytes, status: int) -> dict:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    assert b"content-type: application/json" in head.lower()
    return json.loads(body)["error"]


def test_partial_head_then_stall_is_closed(quick):
    with _connect(quick) as sock:
        sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        raw, took = _until_closed(sock, 10 * HEAD_S)
    assert HEAD_S * 0.8 <= took < HEAD_S + 2.0, took
    err = _json_answer(raw, 408)
    assert err["code"] == "request_timeout" and "request head" in err["message"]
    assert httpx.get(quick.url + "/health").status_code == 200


def test_trickled_head_does_not_extend_the_deadline(quick):
    with _connect(quick) as sock:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        t0 = time.monotonic()
        closed = False
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)  # 20 bytes a second: the whole head would take 6 s
            if time.monotonic() - t0 > HEAD_S + 0.5:
                break
        raw, _ = (b"", 0.0) if closed else _until_closed(sock, 10 * HEAD_S)
    assert time.monotonic() - t0 < HEAD_S + 3.0
    assert closed or _json_answer(raw, 408)["code"] == "request_timeout"


def test_idle_connection_is_closed(quick):
    with _connect(quick) as sock:
        raw, took = _until_closed(sock, 10 * HEAD_S)
    assert raw == b"" and took < HEAD_S + 2.0, (raw, took)


def test_stall_after_a_keep_alive_response_is_closed(quick):
    with _connect(quick) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b'"status"' not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # the next head, never finished
        raw, took = _until_closed(sock, 10 * HEAD_S)
    assert took < HEAD_S + 2.0, took
    assert _json_answer(raw, 408)["code"] == "request_timeout"


def test_endless_head_is_refused(quick):
    with _connect(quick) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(40):  # 200 KiB of header lines, over the 64 KiB cap
                sock.sendall(b"X-Pad: " + b"a" * 5000 + b"\r\n")
        except OSError:
            pass  # closed mid-send: the answer may already be in the receive buffer
        raw, took = _until_closed(sock, 10 * HEAD_S)
    assert took < HEAD_S + 2.0
    # httptools: the JSON 431 (a reset may overtake it, as we were still sending); h11: its own 400
    assert raw.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ", b"<reset>")), raw[:200]
    assert httpx.get(quick.url + "/health").status_code == 200


def test_stalled_body_gets_408(quick):
    with _connect(quick) as sock:
        sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 200\r\n\r\n{\"model\": \"text-rerank\", ")
        raw, took = _until_closed(sock, 10 * HEAD_S)
    assert HEAD_S * 0.8 <= took < HEAD_S + 2.0, took
    err = _json_answer(raw, 408)
    assert "body did not arrive" in err["message"]
    assert httpx.get(quick.url + "/health").status_code == 200


def test_a_long_request_is_not_cut_by_the_head_deadline(quick):
    docs = [("word%d " % i) * 60 for i in range(12)]
    r = httpx.post(quick.url + "/v1/rerank", timeout=120,
                   json={"model": TEXT_RERANK, "query": "q", "documents": docs})
    assert r.status_code == 200 and len(r.json()["results"]) == 12


# ---- bodies the JSON decoder cannot take; integral numbers ---------------------------------------------

BAD_BODIES = {  # body -> words the message must contain
    "nested": (b'{"model": "text-rerank", "query": "q", "documents": ' + b"[" * 10000 + b"]" * 10000 + b"}",
               ["too deeply"]),
    "deep object": (b'{"model": "text-rerank", "query": ' + b'{"a": ' * 10000 + b"1" + b"}" * 10000
                    + b', "documents": ["d"]}', ["too deeply"]),
    "digits": (b'{"model": "text-rerank", "query": "q", "documents": ["d"], "top_n": ' + b"9" * 5000 + b"}",
               ["number too long", "5000 digits"]),
    "utf-8": (b'{"model": "text-rerank", "query": "q\xff\xfe", "documents": ["d"]}', ["not valid UTF-8", "offset"]),
    "truncated": (b'{"model": "text-rerank", "query": "q", "documents": ["d"', ["not valid JSON", "at byte"]),
    "empty": (b"", ["empty"]),
}


@pytest.mark.parametrize("what", sorted(BAD_BODIES))
def test_body_parse_errors_name_what_was_wrong(quick, what):
    body, words = BAD_BODIES[what]
    r = httpx.post(quick.url + "/v1/rerank", content=body, headers={"Content-Type": "application/json"})
    err = assert_error(r, 400, param="body", code="invalid_json")
    assert "send" in err["message"]
    for word in words:
        assert word in err["message"], (word, err)


def test_integral_floats_are_integers_as_the_schema_says(quick, library):
    docs = [f"d{i}" for i in range(5)]
    r = httpx.post(quick.url + "/v1/rerank", json={"model": TEXT_RERANK, "query": "q", "documents": docs,
                                                   "top_n": 2.0})
    assert r.status_code == 200, r.text
    assert without_id(r.json()) == without_id({**library[TEXT_RERANK].rerank("q", docs, top_n=2),
                                               "model": TEXT_RERANK})
    for bad in (1.5, True, "2", 0.0):
        r = httpx.post(quick.url + "/v1/rerank", json={"model": TEXT_RERANK, "query": "q", "documents": docs,
                                                       "top_n": bad})
        assert_error(r, 400, param="top_n", code="invalid_value")
    spec = httpx.get(quick.url + "/openapi.json").json()["components"]["schemas"]
    for model, field in (("RerankRequest", "top_n"), ("EmbeddingRequest", "dimensions")):
        branch = spec[model]["properties"][field]["anyOf"][0]
        assert branch == {"type": "integer", "minimum": 1}, branch  # JSON Schema: 2.0 is an integer


# ---- SIGTERM while a long job runs and tiny requests wait behind it ---------------------------------

def test_sigterm_answers_queued_requests_with_json_503(exported_models):
    import os
    import re
    import signal
    import subprocess
    import sys

    drain_s = 1.0
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlrank.cli", "serve", "--model", f"rr={exported_models[TEXT_RERANK]}",
         "--port", "0", "--drain-timeout", str(drain_s)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    answers: dict[str, httpx.Response] = {}
    threads: list[threading.Thread] = []
    try:
        url = None
        lines = []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if m := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
                url = m.group(1)
        assert url, "".join(lines)
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        def post(key: str, body: dict) -> None:
            answers[key] = httpx.post(url + "/v1/rerank", json=body, timeout=120)

        # A job of many seconds even on a quiet machine (240 documents of ~1,200 tokens; its estimated cost
        # is over the batch budget, so it runs alone) ...
        long_job = {"model": "rr", "query": "q", "documents": [("word%d " % i) * 400 for i in range(240)]}
        threads.append(threading.Thread(target=post, args=("long", long_job)))
        threads[-1].start()
        time.sleep(1.5)
        # ... and tiny requests queued behind it
        for i in range(6):
            threads.append(threading.Thread(target=post, args=(f"tiny{i}", {"model": "rr", "query": "q",
                                                                          "documents": [f"d{i}"]})))
            threads[-1].start()
        waited = time.monotonic() + 30
        while 'vlrank_queue_depth{model="rr"} 6.0' not in httpx.get(url + "/metrics").text:
            assert time.monotonic() < waited, "the tiny requests did not queue up behind the long job"
            time.sleep(0.05)
        assert not answers, {k: v.text for k, v in answers.items()}  # all of them are still waiting
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        answered = time.monotonic() - t0
        out, _ = proc.communicate(timeout=60)
        exited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert sorted(answers) == ["long"] + [f"tiny{i}" for i in range(6)]
    for key, r in answers.items():
        err = assert_error(r, 503, code="shutting_down")
        assert r.headers["retry-after"] == "1", key
        assert "drain deadline" in err["message"], err
    assert answered < drain_s + 3.0, answered  # at the deadline, not after the long job
    assert exited < drain_s + 10.0, exited
    # uvicorn re-raises the signal it caught once shutdown is complete (so a supervisor sees a SIGTERM exit)
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Finished server process" in out
    assert "Traceback" not in out and "Internal Server Error" not in out, out
    assert "answered 503 at the drain deadline" in out
