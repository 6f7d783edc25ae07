"""TEI's routes (POST /rerank, POST /embed, GET /info) on a real server: TEI's shapes and error body, the
library's scores and vectors, huggingface_hub's InferenceClient as a real TEI client, and bad input -> 4xx
in TEI's error body naming the field."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from server_fixtures import (  # noqa: F401 - fixtures
    AUTH, KEY, TEXT_RERANK, VL_EMBED, VL_RERANK, exported_models, library, live, make_facades)
from server_support import LiveServer

QUERY = "What is the capital of France?"
TEXTS = ["Paris is the capital of France.", "London is the capital of England.", "Berlin is in Germany."]
TEI_TYPES = {"Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"}


@pytest.fixture()
def client(live):
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def tei_default(exported_models):
    """A second server, no auth, whose TEI routes default to the text reranker (--tei-default)."""
    from vlrank.server import ServerSettings, create_app

    app = create_app(make_facades(exported_models), settings=ServerSettings(tei_default=TEXT_RERANK))
    server = LiveServer(app).start()
    yield server
    server.stop()


def tei_error(r: httpx.Response, status: int, *, field: str, kind: str = "Validation") -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == kind, body
    assert isinstance(body["error"], str) and body["error"].startswith(field), body
    assert "Traceback" not in body["error"] and "/work/" not in body["error"]
    return body["error"]


def test_rerank_is_the_library_best_first(client, library):
    lib = library[VL_RERANK].rerank(QUERY, TEXTS, raw_scores=True)["results"]
    r = client.post("/rerank", json={"model": VL_RERANK, "query": QUERY, "texts": TEXTS})
    assert r.status_code == 200, r.text
    assert r.json() == [{"index": x["index"], "score": pytest.approx(x["relevance_score"], abs=1e-6)} for x in lib]
    r = client.post("/rerank", json={"model": VL_RERANK, "query": QUERY, "texts": TEXTS, "raw_scores": True,
                                     "return_text": True, "truncate": True, "truncation_direction": "right"})
    got = r.json()
    assert [g["index"] for g in got] == [x["index"] for x in lib]
    for g, x in zip(got, lib):
        assert g["text"] == TEXTS[g["index"]] and abs(g["score"] - x["raw_score"]) < 1e-6
        assert abs(1 / (1 + math.exp(-g["score"])) - x["relevance_score"]) < 1e-6


def test_embed_is_the_library_vectors(client, library):
    lib = library[VL_EMBED].embed(TEXTS[:2], dimensions=16)["data"]
    r = client.post("/embed", json={"inputs": TEXTS[:2], "dimensions": 16, "normalize": True, "truncate": False})
    assert r.status_code == 200, r.text
    got = np.asarray(r.json())
    assert got.shape == (2, 16)
    assert np.abs(got - np.asarray([d["embedding"] for d in lib])).max() < 1e-6
    one = client.post("/embed", json={"inputs": TEXTS[0], "model": VL_EMBED}).json()
    full = library[VL_EMBED].embed(TEXTS[0])["data"][0]["embedding"]
    assert len(one) == 1 and np.abs(np.asarray(one[0]) - full).max() < 1e-6


def test_info_names_the_model_and_the_limits(client, library):
    r = client.get("/info", params={"model": VL_EMBED})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["model_id"] == VL_EMBED and info["model_type"] == {"embedding": {"pooling": "last_token"}}
    assert info["max_input_length"] == library[VL_EMBED].max_length
    assert info["max_client_batch_size"] == 50 and info["max_batch_tokens"] > 0
    rr = client.get("/info", params={"model": VL_RERANK}).json()
    assert "reranker" in rr["model_type"] and rr["max_input_length"] == library[VL_RERANK].max_length
    tei_error(client.get("/info", params={"model": "nope"}), 404, field="model")


def test_huggingface_hub_inference_client_feature_extraction(live, library):
    from huggingface_hub import InferenceClient

    # InferenceClient posts {"inputs", "parameters": {...}} to the URL it is given.
    hub = InferenceClient(model=f"{live.url}/embed", token=KEY, timeout=60)
    got = hub.feature_extraction(TEXTS[0], normalize=True, truncate=True, dimensions=8)
    want = library[VL_EMBED].embed(TEXTS[0], dimensions=8)["data"][0]["embedding"]
    assert got.shape == (1, 8) and np.abs(got[0] - want).max() < 1e-6
    many = hub.feature_extraction(TEXTS)
    want = [d["embedding"] for d in library[VL_EMBED].embed(TEXTS)["data"]]
    assert np.abs(many - np.asarray(want)).max() < 1e-6


def test_tei_default_and_the_only_model_of_a_kind(tei_default, library, client):
    with httpx.Client(base_url=tei_default.url, timeout=60) as c:
        got = c.post("/rerank", json={"query": QUERY, "texts": TEXTS}).json()
        lib = library[TEXT_RERANK].rerank(QUERY, TEXTS)["results"]
        assert [(g["index"], round(g["score"], 6)) for g in got] == \
            [(x["index"], round(x["relevance_score"], 6)) for x in lib]
        assert c.get("/info").json()["model_id"] == TEXT_RERANK
        assert c.post("/embed", json={"inputs": "x"}).status_code == 200  # the only embedding model
    # Two rerankers served and no default: the request must say which.
    msg = tei_error(client.post("/rerank", json={"query": QUERY, "texts": TEXTS}), 400, field="model")
    assert "--tei-default" in msg and VL_RERANK in msg


def test_tei_default_must_be_served(exported_models):
    from vlrank.server import ServerSettings, create_app

    with pytest.raises(ValueError, match="tei_default"):
        create_app(make_facades(exported_models), settings=ServerSettings(tei_default="nope"))


@pytest.mark.parametrize(("route", "body", "status", "field", "kind"), [
    ("/rerank", {"query": QUERY, "texts": []}, 400, "texts", "Empty"),
    ("/rerank", {"query": QUERY, "texts": "one"}, 400, "texts", "Validation"),
    ("/rerank", {"query": 5, "texts": TEXTS}, 400, "query", "Validation"),
    ("/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": "yes"}, 400, "raw_scores", "Validation"),
    ("/rerank", {"query": QUERY, "texts": TEXTS, "truncation_direction": "up"}, 400, "truncation_direction",
     "Validation"),
    ("/rerank", {"query": QUERY, "texts": ["x"] * 10_000}, 413, "texts", "Validation"),
    ("/rerank", {"query": QUERY, "texts": TEXTS, "model": VL_EMBED}, 400, "model", "Validation"),
    ("/rerank", {"query": QUERY, "texts": TEXTS, "model": "nope"}, 404, "model", "Validation"),
    ("/rerank", {"query": QUERY, "texts": TEXTS, "top_n": 1}, 400, "top_n", "Validation"),
    ("/embed", {"inputs": []}, 400, "inputs", "Empty"),
    ("/embed", {"inputs": [1, 2]}, 400, "inputs", "Validation"),
    ("/embed", {"inputs": ["x"] * 10_000}, 413, "inputs", "Validation"),
    ("/embed", {"inputs": "x", "normalize": False}, 400, "normalize", "Validation"),
    ("/embed", {"inputs": "x", "parameters": {"normalize": False}}, 400, "normalize", "Validation"),
    ("/embed", {"inputs": "x", "prompt_name": "query"}, 400, "prompt_name", "Validation"),
    ("/embed", {"inputs": "x", "dimensions": 0}, 400, "dimensions", "Validation"),
    ("/embed", {"inputs": "x", "dimensions": 100_000}, 400, "dimensions", "Validation"),
    ("/embed", {"inputs": "x", "parameters": {"dimensions": "8"}}, 400, "parameters.dimensions", "Validation"),
    ("/embed", {"inputs": None}, 400, "inputs", "Validation"),
    ("/embed", {"texts": ["x"]}, 400, "inputs", "Validation"),
])
def test_bad_input_is_tei_error_body_naming_the_field(client, route, body, status, field, kind):
    if route == "/rerank":  # two rerankers are served: name one, so the case reaches its own field
        body = {"model": VL_RERANK, **body}
    tei_error(client.post(route, json=body), status, field=field, kind=kind)


def test_broken_json_and_auth(client, live):
    r = client.post("/embed", content=b'{"inputs": ', headers={"content-type": "application/json"})
    tei_error(r, 400, field="the request body")
    r = client.post("/rerank", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()) == {"error", "error_type"}
    assert httpx.post(f"{live.url}/embed", json={"inputs": "x"}).status_code == 401
    assert httpx.get(f"{live.url}/info").status_code == 401


def test_openapi_lists_the_tei_routes(client):
    doc = client.get("/openapi.json").json()
    for path, method in (("/rerank", "post"), ("/embed", "post"), ("/info", "get")):
        op = doc["paths"][path][method]
        assert "TEI" in op["summary"]
    schemas = doc["components"]["schemas"]
    assert schemas["TeiRerankRequest"]["examples"] and schemas["TeiEmbedRequest"]["examples"]
    assert "max_length" in schemas["TeiEmbedRequest"]["properties"]["truncate"]["description"]


def test_schemathesis_on_the_new_routes_finds_no_5xx(live):
    # The TEI and Cohere-embed routes fuzzed from /openapi.json (positive and negative bodies): never a 5xx,
    # every 4xx in its API's own error body. Bounded: 40 s for the whole run.
    import time

    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    new = {"/rerank": VL_RERANK, "/embed": VL_EMBED, "/info": None, "/v2/embed": VL_EMBED, "/v1/embed": VL_EMBED}
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if op.path in new]
    assert {op.path for op in operations} == set(new)
    failures: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + 40
    for op in operations:  # noqa: B007 - check() reads the current op
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if op.method.upper() == "POST" else (
            GenerationMode.POSITIVE,)
        for mode in modes:
            @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(drawn=st.tuples(op.as_strategy(generation_mode=mode), st.booleans()))
            def check(drawn) -> None:
                case, served = drawn
                if time.monotonic() > deadline:
                    return
                if isinstance(case.body, dict) and served and new[op.path] is not None:
                    case.body["model"] = new[op.path]
                response = case.call(base_url=live.url, headers=AUTH, timeout=60)
                seen[(op.path, response.status_code)] = seen.get((op.path, response.status_code), 0) + 1
                if response.status_code >= 500:
                    failures.append(f"{op.method} {op.path} {case.body!r:.200} -> {response.text[:200]}")
                elif response.status_code >= 400:
                    body = response.json()
                    # A 401 comes from the auth middleware, before any route, in the server's one body (TEI's
                    # own 401 has no body a client reads).
                    tei = op.path in ("/rerank", "/embed", "/info") and response.status_code != 401
                    message = body["error"] if tei else body["error"]["message"]
                    assert isinstance(message, str) and "Traceback" not in response.text
                    assert not tei or body["error_type"] in TEI_TYPES

            check()
    assert not failures, failures[:5]
    assert any(status == 200 for _, status in seen), seen


def test_cli_tei_default_must_name_a_model(exported_models, capsys):
    from vlrank.cli import main

    rc = main(["serve", "--model", f"{VL_EMBED}={exported_models[VL_EMBED]}", "--tei-default", "nope", "--port", "0"])
    assert rc == 2 and "--tei-default 'nope'" in capsys.readouterr().err


def test_truncation_flags_are_applied(client, library):
    long_text = "tokens " * 9000  # over the tiny embedder's 8,192-token max_length
    r = client.post("/embed", json={"model": VL_EMBED, "inputs": [TEXTS[0], long_text], "truncate": False})
    assert r.status_code == 413, r.text
    assert "inputs[1]" in r.json()["error"]
    for direction, library_truncate in (("left", "START"), ("right", "END")):
        r = client.post("/embed", json={"model": VL_EMBED, "inputs": [long_text + "end"], "truncate": True,
                                        "truncation_direction": direction})
        assert r.status_code == 200, r.text
        lib = library[VL_EMBED].embed([long_text + "end"], truncate=library_truncate)["data"][0]["embedding"]
        assert np.abs(np.asarray(r.json()[0]) - np.asarray(lib)).max() < 1e-6
    r = client.post("/rerank", json={"model": VL_RERANK, "query": QUERY, "texts": TEXTS, "truncation_direction": "left"})
    assert r.status_code == 400 and "truncation_direction" in r.json()["error"], r.text


def test_the_root_route_is_rerank_or_embed_by_its_body(client, live, library):
    """TEI's POST / (what a client given the bare base URL posts to): the body says which route it means."""
    lib = library[VL_RERANK].rerank(QUERY, TEXTS)["results"]
    r = client.post("/", json={"model": VL_RERANK, "query": QUERY, "texts": TEXTS})
    assert r.status_code == 200, r.text
    assert r.json() == [{"index": x["index"], "score": pytest.approx(x["relevance_score"], abs=1e-6)} for x in lib]
    want = library[VL_EMBED].embed(TEXTS)["data"]
    r = client.post("/", json={"model": VL_EMBED, "inputs": TEXTS})
    assert r.status_code == 200, r.text
    assert np.allclose(np.array(r.json()), np.array([d["embedding"] for d in want]), atol=1e-6)
    # huggingface_hub posts to the URL it is given: the bare base URL reaches POST /
    from huggingface_hub import InferenceClient

    got = InferenceClient(model=live.url, token=KEY, timeout=60).feature_extraction(TEXTS[0])
    assert np.abs(np.asarray(got).reshape(-1) - want[0]["embedding"]).max() < 1e-6
    # bad bodies: TEI's error body naming the field; the key is required on / but not on /health
    tei_error(client.post("/", json={"texts": TEXTS}), 400, field="body")
    tei_error(client.post("/", json=[1, 2]), 400, field="body")
    tei_error(client.post("/", content=b"{not json", headers={"content-type": "application/json"}), 400, field="body")
    tei_error(client.post("/", json={"model": VL_RERANK, "query": QUERY, "texts": []}), 400, field="texts",
              kind="Empty")
    tei_error(client.post("/", json={"model": VL_EMBED, "inputs": 3}), 400, field="inputs")
    assert httpx.post(live.url + "/", json={"inputs": "x"}).status_code == 401
    assert httpx.get(live.url + "/health").status_code == 200
