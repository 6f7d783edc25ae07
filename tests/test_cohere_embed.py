"""Cohere's embed API (POST /v2/embed, /v1/embed) on a real server through the Cohere SDK: texts, images
(data URIs) and content inputs, input_type -> instruction, every embedding type equal to the library's
``output_type``; bad input -> 4xx naming the Cohere field. Also a Jina-shaped rerank request on /v1/rerank."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from server_fixtures import (  # noqa: F401 - fixtures
    AUTH, KEY, VL_EMBED, VL_RERANK, data_url, exported_models, image_part, library, live)
from vlrank.server.cohere_embed import INSTRUCTIONS, QUERY_INSTRUCTION

TEXTS = ["The food was delicious.", "A cat sleeps on a sofa."]
IMAGE = "gradient_130x97.png"


@pytest.fixture()
def client(live):
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as c:
        yield c


def lib(library, inputs, **kw):
    return [d["embedding"] for d in library[VL_EMBED].embed(inputs, **kw)["data"]]


def close(got, want) -> bool:
    return np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max() < 1e-6


def test_cohere_v2_client_float_int8_binary(live, library):
    import cohere

    co = cohere.ClientV2(api_key=KEY, base_url=live.url, timeout=60)
    got = co.embed(model=VL_EMBED, texts=TEXTS, input_type="search_document",
                   embedding_types=["float", "int8", "uint8", "binary", "ubinary", "base64"], output_dimension=32)
    emb = got.embeddings
    assert close(emb.float_, lib(library, TEXTS, dimensions=32))
    for kind in ("int8", "uint8", "binary", "ubinary"):
        assert getattr(emb, kind) == lib(library, TEXTS, dimensions=32, output_type=kind), kind
    assert len(emb.binary[0]) == 32 // 8
    floats = [np.frombuffer(base64.b64decode(s), "<f4") for s in emb.base64]
    assert close(floats, emb.float_)
    assert got.texts == TEXTS and got.meta.api_version.version == "2"
    assert got.meta.billed_units.input_tokens == library[VL_EMBED].embed(TEXTS)["usage"]["prompt_tokens"]
    assert got.meta.warnings is None


def test_input_type_picks_the_official_instruction(live, library):
    import cohere

    co = cohere.ClientV2(api_key=KEY, base_url=live.url, timeout=60)
    query = co.embed(model=VL_EMBED, texts=TEXTS[:1], input_type="search_query", embedding_types=["float"])
    assert close(query.embeddings.float_, lib(library, TEXTS[:1], instruction=QUERY_INSTRUCTION))
    for input_type in ("search_document", "classification", "clustering", "image"):
        assert INSTRUCTIONS[input_type] is None
        doc = co.embed(model=VL_EMBED, texts=TEXTS[:1], input_type=input_type, embedding_types=["float"])
        assert close(doc.embeddings.float_, lib(library, TEXTS[:1]))
    assert not close(query.embeddings.float_, lib(library, TEXTS[:1]))  # the instruction does change the vector


def test_images_and_content_inputs(live, library):
    import cohere

    co = cohere.ClientV2(api_key=KEY, base_url=live.url, timeout=60)
    got = co.embed(model=VL_EMBED, images=[data_url(IMAGE)], input_type="image", embedding_types=["float", "int8"])
    want_input = [{"content": [image_part(IMAGE)]}]
    assert close(got.embeddings.float_, lib(library, want_input))
    assert got.embeddings.int8 == lib(library, want_input, output_type="int8")
    mixed = [{"content": [{"type": "text", "text": "a gradient"}, image_part(IMAGE)]},
             {"content": [{"type": "text", "text": TEXTS[0]}]}]
    got = co.embed(model=VL_EMBED, inputs=mixed, input_type="search_document", embedding_types=["ubinary"])
    assert got.embeddings.ubinary == lib(library, mixed, output_type="ubinary")


def test_v1_client_floats_and_by_type(live, library):
    import cohere

    co = cohere.Client(api_key=KEY, base_url=live.url, timeout=60)
    plain = co.embed(model=VL_EMBED, texts=TEXTS, input_type="search_document")
    assert plain.response_type == "embeddings_floats" and close(plain.embeddings, lib(library, TEXTS))
    typed = co.embed(model=VL_EMBED, texts=TEXTS, input_type="search_query", embedding_types=["int8", "binary"])
    assert typed.response_type == "embeddings_by_type"
    assert typed.embeddings.int8 == lib(library, TEXTS, instruction=QUERY_INSTRUCTION, output_type="int8")
    assert typed.embeddings.binary == lib(library, TEXTS, instruction=QUERY_INSTRUCTION, output_type="binary")


def test_truncate_is_applied_and_compat_fields_are_accepted_with_warnings(client, library):
    r = client.post("/v2/embed", json={"model": VL_EMBED, "texts": TEXTS, "input_type": "search_document",
                                       "truncate": "START", "max_tokens": 64, "priority": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "embeddings", "texts", "meta"} and set(body["embeddings"]) == {"float"}
    warnings = body["meta"]["warnings"]
    assert not any("truncate" in w for w in warnings) and len(warnings) == 2
    long_text = "tokens " * 9000  # over the tiny embedder's 8,192-token max_length
    refused = client.post("/v2/embed", json={"model": VL_EMBED, "texts": ["ok", long_text], "truncate": "NONE"})
    assert refused.status_code == 413 and refused.json()["error"]["param"] == "texts[1]", refused.text
    start = client.post("/v2/embed", json={"model": VL_EMBED, "texts": [long_text + "end"], "truncate": "START"})
    lib = library[VL_EMBED].embed([long_text + "end"], truncate="START")["data"][0]["embedding"]
    assert np.abs(np.asarray(start.json()["embeddings"]["float"][0]) - np.asarray(lib)).max() < 1e-6
    r = client.post("/v2/embed", json={"model": VL_EMBED, "texts": TEXTS, "truncate": "END"})
    assert "warnings" not in r.json()["meta"]


def test_truncate_through_the_cohere_client(live, library):
    import cohere

    co = cohere.ClientV2(api_key=KEY, base_url=live.url, timeout=60)
    long_text = "tokens " * 9000 + "end"  # over the tiny embedder's 8,192-token max_length
    want = {t: lib(library, [long_text], truncate=t) for t in ("START", "END")}
    assert not close(want["START"], want["END"])  # the two ends of the text differ: the cut is where it was asked
    for truncate in ("START", "END"):
        got = co.embed(model=VL_EMBED, texts=[long_text], input_type="search_document", embedding_types=["float"],
                       truncate=truncate)
        assert close(got.embeddings.float_, want[truncate]), truncate
    with pytest.raises(cohere.core.ApiError) as err:
        co.embed(model=VL_EMBED, texts=["ok", long_text], input_type="search_document", embedding_types=["float"],
                 truncate="NONE")
    assert err.value.status_code == 413 and err.value.body["error"]["param"] == "texts[1]"


BAD = [
    ({"texts": []}, 400, "texts"),
    ({"texts": "one"}, 400, "texts"),
    ({"texts": [1]}, 400, "texts[0]"),
    ({"texts": TEXTS, "embedding_types": ["int4"]}, 400, "embedding_types[0]"),
    ({"texts": TEXTS, "embedding_types": []}, 400, "embedding_types"),
    ({"texts": TEXTS, "embedding_types": "float"}, 400, "embedding_types"),
    ({"texts": TEXTS, "input_type": "query"}, 400, "input_type"),
    ({"texts": TEXTS, "truncate": "MIDDLE"}, 400, "truncate"),
    ({"texts": TEXTS, "output_dimension": 0}, 400, "output_dimension"),
    ({"texts": TEXTS, "output_dimension": 100_000}, 400, "output_dimension"),
    ({"texts": TEXTS, "images": [data_url(IMAGE)]}, 400, "images"),
    ({}, 400, "texts"),
    ({"texts": ["x"] * 10_000}, 413, "texts"),
    ({"images": ["data:image/png;base64," + base64.b64encode(b"not an image").decode()]}, 400, "images[0]"),
    ({"images": ["hello"]}, 400, "images[0]"),
    ({"inputs": [{"content": [{"type": "audio", "audio": "x"}]}]}, 400, "inputs[0].content[0]"),
    ({"inputs": [{"text": 5}]}, 400, "inputs[0]"),
    ({"inputs": []}, 400, "inputs"),
    ({"texts": TEXTS, "unknown": 1}, 400, "unknown"),
]


@pytest.mark.parametrize("route", ["/v2/embed", "/v1/embed"])
@pytest.mark.parametrize(("body", "status", "field"), BAD)
def test_bad_input_names_the_cohere_field(client, route, body, status, field):
    r = client.post(route, json={"model": VL_EMBED, **body})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] is not None and error["param"].startswith(field), error
    assert "Traceback" not in error["message"] and "/work/" not in error["message"]


def test_wrong_model_and_auth(client, live):
    r = client.post("/v2/embed", json={"model": VL_RERANK, "texts": TEXTS})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    assert client.post("/v2/embed", json={"model": "nope", "texts": TEXTS}).status_code == 404
    assert httpx.post(f"{live.url}/v2/embed", json={"model": VL_EMBED, "texts": TEXTS}).status_code == 401


def test_openapi_lists_the_embed_routes_with_served_examples(client):
    doc = client.get("/openapi.json").json()
    for path in ("/v2/embed", "/v1/embed"):
        assert "Cohere embed" in doc["paths"][path]["post"]["summary"]
    (example,) = doc["components"]["schemas"]["CohereEmbedRequest"]["examples"]
    assert example["model"] == VL_EMBED and example["embedding_types"] == ["float", "int8", "binary"]


# ---- Jina: its documented rerank body on /v1/rerank --------------------------------------------------------
def test_jina_rerank_request_scores_like_the_library(client, library):
    # Jina's reranker API (jina-reranker-m0): documents as {"text"} / {"image"} objects, return_documents.
    documents = [{"text": "A colour gradient from dark to light."}, {"image": data_url(IMAGE)},
                 {"text": "The capital of France is Paris."}]
    body = {"model": VL_RERANK, "query": "a gradient image", "documents": documents, "top_n": 3,
            "return_documents": True}
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    want = library[VL_RERANK].rerank("a gradient image", documents, top_n=3)["results"]
    assert [g["index"] for g in got] == [w["index"] for w in want]
    assert all(abs(g["relevance_score"] - w["relevance_score"]) < 1e-6 for g, w in zip(got, want))
    by_index = {g["index"]: g["document"] for g in got}
    assert by_index[0]["text"] == documents[0]["text"] and by_index[2]["text"] == documents[2]["text"]
    assert r.json()["usage"]["total_tokens"] > 0
    bare = client.post("/v1/rerank", json={**body, "return_documents": False}).json()["results"]
    assert all("document" not in g or g["document"] is None for g in bare)
