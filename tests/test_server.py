"""The HTTP server end to end: a real uvicorn server on 127.0.0.1 over tiny golden models exported with
vlrank.export, driven by a real httpx client; every answer is compared with the library's own result."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from server_fixtures import (  # noqa: F401 - fixtures
    AUTH,
    KEY,
    TEXT_RERANK,
    VL_EMBED,
    VL_RERANK,
    data_url,
    exported_models,
    image_part,
    library,
    live,
    make_facades,
    without_id,
)
from server_support import LiveServer


@pytest.fixture()
def client(live):
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as c:
        yield c


def assert_error(response: httpx.Response, status: int, *, param: str | None = ..., code: str | None = ...):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in response.text
    if param is not ...:
        assert err["param"] == param, err
    if code is not ...:
        assert err["code"] == code, err
    return err


# ---- the seed examples -------------------------------------------------------------------------------

def test_rerank_capital_of_france_top_n_2_equals_the_library(client, library):
    query = "What is the capital of France?"
    documents = ["Paris is the capital of France.", "London is the capital of England.",
                 "Berlin is the capital of Germany."]
    for model in (VL_RERANK, TEXT_RERANK):
        r = client.post("/v1/rerank", json={"model": model, "query": query, "documents": documents, "top_n": 2})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["object"] == "list" and got["model"] == model and got["id"].startswith("rerank-")
        assert len(got["results"]) == 2
        scores = [x["relevance_score"] for x in got["results"]]
        assert scores == sorted(scores, reverse=True)
        assert without_id(got) == without_id(library[model].rerank(query, documents, top_n=2))


def test_image_only_multimodal_rerank_with_a_data_url(client, library):
    query = "a photo"
    documents = [{"content": [image_part("photo_like_200x150.jpg")]}, "a text document",
                 {"content": [image_part("rgba_60x90.png"), {"type": "text", "text": "with a caption"}]}]
    r = client.post("/v1/rerank", json={"model": VL_RERANK, "query": query, "documents": documents})
    assert r.status_code == 200, r.text
    got = r.json()
    assert without_id(got) == without_id(library[VL_RERANK].rerank(query, documents))
    by_index = {x["index"]: x for x in got["results"]}
    assert by_index[0]["document"] == {"text": None, "multi_modal": documents[0]["content"]}
    assert by_index[1]["document"] == {"text": "a text document", "multi_modal": None}
    r = client.post("/v1/rerank", json={"model": VL_RERANK, "query": {"content": [image_part("gray_40x300.png")]},
                                        "documents": documents, "return_documents": False})
    assert r.status_code == 200, r.text
    assert all("document" not in x for x in r.json()["results"])


def test_text_and_multimodal_embeddings_equal_the_library(client, library):
    requests = [
        {"input": "The food was delicious."},
        {"input": ["first", "second", ""]},
        {"input": [{"content": [image_part("palette_64x64.png"), {"type": "text", "text": "a palette"}]},
                   "plain text"]},
        {"messages": [{"role": "user", "content": [image_part("rgb_noise_70x50.png")]},
                      {"role": "user", "content": "noise"}]},
        {"input": "short", "dimensions": 8},
        {"input": ["x", "y"], "encoding_format": "base64", "instruction": "Represent the query"},
    ]
    for req in requests:
        r = client.post("/v1/embeddings", json={"model": VL_EMBED, **req})
        assert r.status_code == 200, (req, r.text)
        got = r.json()
        assert got == library[VL_EMBED].embed(**req), req
        assert got["object"] == "list" and got["model"] == VL_EMBED
    small = client.post("/v1/embeddings", json={"model": VL_EMBED, "input": "short", "dimensions": 8}).json()
    vec = np.asarray(small["data"][0]["embedding"])
    assert vec.shape == (8,) and abs(np.linalg.norm(vec) - 1) < 1e-5
    packed = client.post("/v1/embeddings", json={"model": VL_EMBED, "input": "x", "encoding_format": "base64"})
    raw = np.frombuffer(base64.b64decode(packed.json()["data"][0]["embedding"]), dtype=np.float32)
    assert abs(np.linalg.norm(raw) - 1) < 1e-5


def test_models_health_metrics_openapi(client, live):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    cards = {m["id"]: m for m in models["data"]}
    assert set(cards) == {VL_RERANK, TEXT_RERANK, VL_EMBED}
    assert all(m["object"] == "model" for m in cards.values())
    assert cards[VL_EMBED]["type"] == "embedding" and cards[VL_RERANK]["type"] == "rerank"
    health = httpx.get(live.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    client.post("/v1/rerank", json={"model": TEXT_RERANK, "query": "q", "documents": ["d"]})
    client.post("/v1/rerank", json={"model": "nope", "query": "q", "documents": ["d"]})
    text = httpx.get(live.url + "/metrics").text
    assert re.search(r'vlrank_requests_total\{method="POST",route="/v1/rerank",status="200"\} [1-9]', text)
    assert re.search(r'vlrank_requests_total\{method="POST",route="/v1/rerank",status="404"\} [1-9]', text)
    assert re.search(r'vlrank_request_duration_seconds_count\{route="/v1/rerank"\} [1-9]', text)
    assert f'vlrank_queue_depth{{model="{TEXT_RERANK}"}}' in text
    assert re.search(rf'vlrank_batch_requests_count\{{model="{TEXT_RERANK}"\}} [1-9]', text)
    assert re.search(rf'vlrank_prompt_tokens_total\{{model="{TEXT_RERANK}"\}} [1-9]', text)
    assert "vlrank_ready 1.0" in text
    spec = httpx.get(live.url + "/openapi.json").json()
    assert {"/v1/rerank", "/v1/embeddings", "/v1/models", "/health", "/metrics"} <= set(spec["paths"])


# ---- every error code, from real requests ----------------------------------------------------------

def test_401_without_or_with_a_wrong_key(live):
    body = {"model": VL_RERANK, "query": "q", "documents": ["d"]}
    assert_error(httpx.post(live.url + "/v1/rerank", json=body), 401, code="invalid_api_key")
    wrong = httpx.post(live.url + "/v1/rerank", json=body, headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401)
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert_error(httpx.get(live.url + "/v1/models", headers={"Authorization": f"Basic {KEY}"}), 401)
    assert_error(httpx.post(live.url + "/v1/embeddings", json={"model": VL_EMBED, "input": "x"}), 401)
    assert httpx.get(live.url + "/health").status_code == 200  # probes need no key


def test_404_unknown_model_and_route(client):
    err = assert_error(client.post("/v1/rerank", json={"model": "gpt-4", "query": "q", "documents": ["d"]}), 404,
                       param="model", code="model_not_found")
    assert VL_RERANK in err["message"]
    assert_error(client.post("/v1/embeddings", json={"model": "nope", "input": "x"}), 404, param="model")
    assert_error(client.get("/v1/nothing"), 404, param=None, code="not_found")
    assert_error(client.get("/v1/rerank"), 405)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "q", "documents": ["d"]}, "model"),
        ({"model": VL_RERANK, "documents": ["d"]}, "query"),
        ({"model": VL_RERANK, "query": "q", "documents": []}, "documents"),
        ({"model": VL_RERANK, "query": "q", "documents": ["d"], "top_n": "2"}, "top_n"),
        ({"model": VL_RERANK, "query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
        ({"model": VL_RERANK, "query": "q", "documents": ["d"], "return_documents": 1}, "return_documents"),
        ({"model": VL_RERANK, "query": "q", "documents": ["d"], "topn": 2}, "topn"),
        ({"model": VL_RERANK, "query": 5, "documents": ["d"]}, "query"),
        ({"model": VL_RERANK, "query": "q", "documents": ["d", {"content": [{"type": "video", "video": "v"}]}]},
         "documents[1].content[0].video"),
        ({"model": VL_RERANK, "query": "q", "documents": [{"content": [{"type": "image_url",
                                                                        "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
         "documents[0].content[0].image_url.url"),
        ({"model": VL_RERANK, "query": {"content": [{"type": "image_url", "image_url": {"url": "file:///etc/hosts"}}]},
          "documents": ["d"]}, "query.content[0].image_url.url"),
        ({"model": VL_RERANK, "query": "q", "documents": [{"content": [{"type": "image_url",
                                                                        "image_url": {"url": "/etc/hosts"}}]}]},
         "documents[0].content[0].image_url.url"),
        ({"model": VL_RERANK, "query": "q",
          "documents": [{"content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/x.png"}}]}]},
         "documents[0].content[0].image_url.url"),
        ({"model": VL_EMBED, "query": "q", "documents": ["d"]}, "model"),
    ],
)
def test_400_names_the_field(client, body, param):
    err = assert_error(client.post("/v1/rerank", json=body), 400, param=param)
    assert "Traceback" not in err["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": VL_EMBED}, "input"),
        ({"model": VL_EMBED, "input": "x", "messages": [{"role": "user", "content": "y"}]}, None),
        ({"model": VL_EMBED, "input": []}, "input"),
        ({"model": VL_EMBED, "input": [1, 2, 3]}, "input"),
        ({"model": VL_EMBED, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": VL_EMBED, "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": VL_EMBED, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"model": VL_RERANK, "input": "x"}, "model"),
    ],
)
def test_400_embeddings_names_the_field(client, body, param):
    err = assert_error(client.post("/v1/embeddings", json=body), 400)
    if param is not None:
        assert err["param"] == param or (err["param"] or "").startswith(param), err


def test_400_for_a_body_that_is_not_json(client):
    assert_error(client.post("/v1/rerank", content=b"{not json", headers={"content-type": "application/json"}),
                 400, code="invalid_json")
    assert_error(client.post("/v1/rerank", content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    assert_error(client.post("/v1/rerank", content=b"model=x", headers={"content-type": "text/plain"}), 400)


def test_413_body_too_large_too_many_documents_and_context_too_long(client, live):
    big = {"model": VL_RERANK, "query": "q", "documents": ["x" * (1024 * 1024)]}
    assert_error(client.post("/v1/rerank", json=big), 413, code="request_too_large")

    def chunks():  # no Content-Length: the cap applies while the body streams in
        yield b'{"model": "vl-rerank", "query": "q", "documents": ["'
        for _ in range(80):
            yield b"y" * 16384
        yield b'"]}'

    streamed = client.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert_error(streamed, 413)
    # The rest of that body was never read: the connection closes, so it cannot become the next request's head.
    assert streamed.headers.get("connection") == "close"
    many = {"model": TEXT_RERANK, "query": "q", "documents": ["d"] * 51}
    assert_error(client.post("/v1/rerank", json=many), 413, param="documents", code="too_many_documents")
    assert_error(client.post("/v1/embeddings", json={"model": VL_EMBED, "input": ["d"] * 51}), 413, param="input")
    # 27 images of 1,247 (+2) tokens each cannot fit the 32,768-token context
    huge_query = {"content": [image_part("big_2500x1700.png")] * 27}
    err = assert_error(client.post("/v1/rerank", json={"model": VL_RERANK, "query": huge_query, "documents": ["d"]}),
                       413, code="context_length_exceeded")
    assert err["param"] == "query" and "32768" in err["message"]
    huge_doc = {"content": [image_part("big_2500x1700.png")] * 14}
    err = assert_error(client.post("/v1/rerank", json={"model": VL_RERANK, "query": huge_doc,
                                                       "documents": ["d", huge_doc]}), 413)
    assert err["param"] == "documents[1]"
    err = assert_error(client.post("/v1/embeddings", json={"model": VL_EMBED, "input": ["x", huge_query]}), 413)
    assert err["param"] == "input[1]"


def test_503_with_retry_after_while_models_load(exported_models):
    from vlrank.server import ModelSpec, ServerSettings, create_app

    gate = threading.Event()
    facades = make_facades({VL_RERANK: exported_models[VL_RERANK]})

    def slow_loader():
        gate.wait(30)
        return facades[VL_RERANK]

    app = create_app({VL_RERANK: ModelSpec(loader=slow_loader, kind="rerank")}, settings=ServerSettings())
    with LiveServer(app, wait_ready=False) as server:
        health = httpx.get(server.url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert health.headers["retry-after"] == "1"
        early = httpx.post(server.url + "/v1/rerank", json={"model": VL_RERANK, "query": "q", "documents": ["d"]})
        assert_error(early, 503, code="model_not_ready")
        assert early.headers["retry-after"] == "1"
        gate.set()
        server.until_healthy(60)
        ok = httpx.post(server.url + "/v1/rerank", json={"model": VL_RERANK, "query": "q", "documents": ["d"]})
        assert ok.status_code == 200


def test_500_is_plain_json_and_the_traceback_stays_in_the_log(exported_models, caplog):
    import vlrank
    from vlrank.server import ServerSettings, create_app

    class BrokenReranker(vlrank.Reranker):
        """A real reranker with a bug injected after loading (in the model thread's half of a call)."""

        def run_prepared(self, prepared):
            raise KeyError("secret-internal-detail")

    app = create_app({"broken": BrokenReranker(str(exported_models[VL_RERANK]))},
                     settings=ServerSettings(warmup=False))
    with caplog.at_level("ERROR", logger="vlrank.server"), LiveServer(app) as server:
        r = httpx.post(server.url + "/v1/rerank", json={"model": "broken", "query": "q", "documents": ["d"]})
        err = assert_error(r, 500, code="internal_error")
        assert "secret-internal-detail" not in r.text
        assert "KeyError" not in err["message"]
    assert "secret-internal-detail" in caplog.text


def test_client_disconnect_cancels_queued_work(exported_models):
    from vlrank.server import ServerSettings, create_app

    facades = make_facades({TEXT_RERANK: exported_models[TEXT_RERANK]})
    app = create_app(facades, settings=ServerSettings(max_batch_requests=1, max_documents=2000))
    busy = {"model": TEXT_RERANK, "query": "q", "documents": [f"document number {i} " * 20 for i in range(1500)]}

    async def main(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            long_task = asyncio.create_task(client.post("/v1/rerank", json=busy))
            await asyncio.sleep(0.3)  # the worker is busy with the long request now
            async with httpx.AsyncClient(base_url=url, timeout=0.3) as impatient:
                with pytest.raises(httpx.TimeoutException):
                    await impatient.post("/v1/rerank", json={"model": TEXT_RERANK, "query": "q", "documents": ["d"]})
            assert (await long_task).status_code == 200

    with LiveServer(app) as server:
        asyncio.run(main(server.url))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = httpx.get(server.url + "/metrics").text
            if re.search(rf'vlrank_cancelled_requests_total\{{model="{TEXT_RERANK}"\}} 1\.0', text):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the disconnected request was not cancelled:\n" + text)
        assert httpx.get(server.url + "/metrics").status_code == 200


def test_shutdown_drains_in_flight_requests(exported_models, library):
    from vlrank.server import ServerSettings, create_app

    app = create_app(make_facades({TEXT_RERANK: exported_models[TEXT_RERANK]}), settings=ServerSettings())
    server = LiveServer(app).start()
    results: list[httpx.Response] = []

    async def burst() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            tasks = [asyncio.create_task(client.post("/v1/rerank", json={
                "model": TEXT_RERANK, "query": f"q{i}", "documents": [f"d{j}" for j in range(40)]}))
                for i in range(16)]
            await asyncio.sleep(0.2)
            server.server.should_exit = True  # shut down while most of them wait in the queue
            results.extend(await asyncio.gather(*tasks))

    asyncio.run(burst())
    server.stop()
    assert [r.status_code for r in results] == [200] * 16
    expected = library[TEXT_RERANK].rerank("q3", [f"d{j}" for j in range(40)])
    assert without_id(results[3].json()) == without_id(expected)


# ---- the CLI -----------------------------------------------------------------------------------------

def test_vlrank_serve_cli_end_to_end(exported_models, tmp_path):
    env = {**os.environ, "VLRANK_API_KEY": "cli-key"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlrank.cli", "serve", "--model", f"rr={exported_models[TEXT_RERANK]}",
         "--model", f"emb={exported_models[VL_EMBED]}", "--port", "0", "--max-documents", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        lines = []
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if m := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
                url = m.group(1)
        assert url, "".join(lines)
        deadline = time.monotonic() + 60
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        headers = {"Authorization": "Bearer cli-key"}
        r = httpx.post(url + "/v1/rerank", headers=headers,
                       json={"model": "rr", "query": "capital of France?", "documents": ["Paris", "Berlin"], "top_n": 1})
        assert r.status_code == 200 and len(r.json()["results"]) == 1
        assert httpx.post(url + "/v1/rerank", json={"model": "rr", "query": "q", "documents": ["d"]}).status_code == 401
        many = httpx.post(url + "/v1/rerank", headers=headers, json={"model": "rr", "query": "q", "documents": ["d"] * 6})
        assert many.status_code == 413
        e = httpx.post(url + "/v1/embeddings", headers=headers, json={"model": "emb", "input": "x"})
        assert e.status_code == 200 and e.json()["model"] == "emb"
    finally:
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out


def test_vlrank_serve_cli_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "vlrank.cli", "serve", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    bad = run("--model", "no-equals-sign")
    assert bad.returncode == 1 and "NAME=PATH" in bad.stderr and "Traceback" not in bad.stderr
    missing = run("--model", f"x={tmp_path}")
    assert missing.returncode == 1 and "vlrank.json" in missing.stderr
    helped = subprocess.run([sys.executable, "-m", "vlrank.cli", "serve", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "examples:" in helped.stdout and "/v1/rerank" in helped.stdout
