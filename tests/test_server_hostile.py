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
