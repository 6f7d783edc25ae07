"""The client libraries people already use, pointed at a real `vlrank serve` (uvicorn on 127.0.0.1):
the OpenAI SDK, the Cohere SDK v1 and v2, LangChain's CohereRerank and OpenAIEmbeddings — each gets the
library's scores and vectors. Also the vlrank extensions over HTTP (raw_scores, vLLM's /score) and the
OpenAPI document of the new routes."""

from __future__ import annotations

import base64
import math

import httpx
import numpy as np
import pytest

from server_fixtures import (  # noqa: F401 - fixtures
    AUTH, KEY, TEXT_RERANK, VL_EMBED, VL_RERANK, exported_models, library, live)

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "London is the capital of England.", "Berlin is the capital of Germany."]


@pytest.fixture()
def client(live):
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as c:
        yield c


TEXTS = ["The food was delicious.", "A cat sleeps on a sofa.", ""]


def lib_vectors(library, texts, **kw) -> np.ndarray:
    out = library[VL_EMBED].embed(texts, **kw)
    return np.asarray([d["embedding"] for d in out["data"]], dtype=np.float64)


def lib_ranking(library, model, query, docs, **kw) -> list[tuple[int, float]]:
    return [(r["index"], r["relevance_score"]) for r in library[model].rerank(query, docs, **kw)["results"]]


# ---- OpenAI -----------------------------------------------------------------------------------------------

def test_openai_sdk_embeddings_float_base64_dimensions_and_models(live, library):
    import openai

    sdk = openai.OpenAI(base_url=live.url + "/v1", api_key=KEY, max_retries=0)
    expected = lib_vectors(library, TEXTS)
    got = sdk.embeddings.create(model=VL_EMBED, input=TEXTS, encoding_format="float")
    assert got.model == VL_EMBED and [d.index for d in got.data] == [0, 1, 2]
    np.testing.assert_array_equal(np.asarray([d.embedding for d in got.data]), expected)
    assert got.usage.prompt_tokens > 0
    # The SDK's default asks for base64 and decodes it itself: float32 of the same vectors.
    default = sdk.embeddings.create(model=VL_EMBED, input=TEXTS)
    np.testing.assert_array_equal(np.asarray([d.embedding for d in default.data], dtype=np.float32),
                                  expected.astype(np.float32))
    packed = sdk.embeddings.create(model=VL_EMBED, input=TEXTS[0], encoding_format="base64")
    raw = np.frombuffer(base64.b64decode(packed.data[0].embedding), dtype=np.float32)
    np.testing.assert_array_equal(raw, expected[0].astype(np.float32))
    small = sdk.embeddings.create(model=VL_EMBED, input=TEXTS[:2], dimensions=8, encoding_format="float")
    np.testing.assert_array_equal(np.asarray([d.embedding for d in small.data]),
                                  lib_vectors(library, TEXTS[:2], dimensions=8))
    assert all(len(d.embedding) == 8 for d in small.data)
    ids = {m.id: m for m in sdk.models.list()}
    assert set(ids) == {VL_RERANK, TEXT_RERANK, VL_EMBED} and ids[VL_EMBED].owned_by == "vlrank"
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="no-such-model", input="x")


# ---- Cohere ------------------------------------------------------------------------------------------------

def test_cohere_v1_client_rerank_top_n_and_return_documents(live, library):
    import cohere

    co = cohere.Client(api_key=KEY, base_url=live.url, timeout=60)
    for model in (VL_RERANK, TEXT_RERANK):
        got = co.rerank(model=model, query=QUERY, documents=DOCS, top_n=2, return_documents=True)
        assert [(r.index, r.relevance_score) for r in got.results] == lib_ranking(library, model, QUERY, DOCS,
                                                                                  top_n=2)
        assert [r.document.text for r in got.results] == [DOCS[r.index] for r in got.results]
        bare = co.rerank(model=model, query=QUERY, documents=DOCS, return_documents=False)
        assert len(bare.results) == 3 and all(r.document is None for r in bare.results)


def test_cohere_v2_client_rerank(live, library):
    import cohere

    co = cohere.ClientV2(api_key=KEY, base_url=live.url, timeout=60)
    for model in (VL_RERANK, TEXT_RERANK):
        got = co.rerank(model=model, query=QUERY, documents=DOCS, top_n=2)
        assert [(r.index, r.relevance_score) for r in got.results] == lib_ranking(library, model, QUERY, DOCS,
                                                                                  top_n=2)
        assert got.id.startswith("rerank-") and got.meta.api_version.version == "2"
        assert got.meta.tokens.input_tokens == library[model].rerank(QUERY, DOCS)["usage"]["prompt_tokens"]
        assert got.meta.warnings is None
    # max_tokens_per_doc is applied (issue 19): each document's text is capped, as the library does.
    capped = co.rerank(model=VL_RERANK, query=QUERY, documents=DOCS, max_tokens_per_doc=2)
    assert capped.meta.warnings is None
    assert [(r.index, r.relevance_score) for r in capped.results] == [
        (r["index"], r["relevance_score"]) for r in library[VL_RERANK].rerank(QUERY, DOCS, max_tokens_per_doc=2)["results"]]
    with pytest.raises(cohere.core.ApiError) as err:
        co.rerank(model=VL_EMBED, query=QUERY, documents=DOCS)
    assert err.value.status_code == 400


def test_v2_rerank_shape_over_http(client, library):
    r = client.post("/v2/rerank", json={"model": VL_RERANK, "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "results", "meta"}
    assert all(set(x) == {"index", "relevance_score"} for x in body["results"])
    assert [(x["index"], x["relevance_score"]) for x in body["results"]] == lib_ranking(library, VL_RERANK, QUERY, DOCS)
    r = client.post("/v2/rerank", json={"model": VL_RERANK, "query": QUERY, "documents": DOCS, "top_n": 1,
                                        "return_documents": True, "raw_scores": True})
    (best,) = r.json()["results"]
    assert best["document"] == {"text": DOCS[best["index"]], "multi_modal": None}
    assert abs(1 / (1 + math.exp(-best["raw_score"])) - best["relevance_score"]) < 1e-12
    r = client.post("/v2/rerank", json={"model": VL_RERANK, "query": QUERY, "documents": DOCS, "top_n": "1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_n"
    assert httpx.post(client.base_url.join("/v2/rerank"), json={"model": VL_RERANK, "query": QUERY,
                                                                  "documents": DOCS}).status_code == 401


# ---- LangChain ---------------------------------------------------------------------------------------------

def test_langchain_cohere_rerank_and_openai_embeddings(live, library):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document
    from langchain_openai import OpenAIEmbeddings

    reranker = CohereRerank(model=TEXT_RERANK, cohere_api_key=KEY, base_url=live.url, top_n=2)
    ranked = reranker.rerank(DOCS, QUERY)
    assert [(r["index"], r["relevance_score"]) for r in ranked] == lib_ranking(library, TEXT_RERANK, QUERY, DOCS,
                                                                             top_n=2)
    compressed = reranker.compress_documents([Document(page_content=d) for d in DOCS], QUERY)
    assert [d.page_content for d in compressed] == [DOCS[r["index"]] for r in ranked]
    assert [d.metadata["relevance_score"] for d in compressed] == [r["relevance_score"] for r in ranked]

    # check_embedding_ctx_length=False: send the texts as they are (no tiktoken, which would need a download).
    embeddings = OpenAIEmbeddings(model=VL_EMBED, base_url=live.url + "/v1", api_key=KEY,
                                  check_embedding_ctx_length=False, max_retries=0)
    docs = embeddings.embed_documents(TEXTS[:2])
    np.testing.assert_allclose(np.asarray(docs), lib_vectors(library, TEXTS[:2]), rtol=0, atol=1e-7)
    query = embeddings.embed_query(TEXTS[0])
    np.testing.assert_allclose(np.asarray(query), lib_vectors(library, [TEXTS[0]])[0], rtol=0, atol=1e-7)


# ---- vlrank extensions and vLLM's /score ---------------------------------------------------------------------

def test_raw_scores_through_v1_rerank(client, library):
    for model in (VL_RERANK, TEXT_RERANK):
        r = client.post("/v1/rerank", json={"model": model, "query": QUERY, "documents": DOCS, "raw_scores": True})
        assert r.status_code == 200, r.text
        got = r.json()
        expected = library[model].rerank(QUERY, DOCS, raw_scores=True)
        assert [{k: v for k, v in x.items()} for x in got["results"]] == expected["results"]
        for x in got["results"]:
            assert abs(1 / (1 + math.exp(-x["raw_score"])) - x["relevance_score"]) < 1e-12
    plain = client.post("/v1/rerank", json={"model": VL_RERANK, "query": QUERY, "documents": DOCS}).json()
    assert all("raw_score" not in x for x in plain["results"])


def test_vllm_score_one_to_many_and_pairs(client, library):
    for path in ("/score", "/v1/score"):
        r = client.post(path, json={"model": TEXT_RERANK, "text_1": QUERY, "text_2": DOCS})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["model"] == TEXT_RERANK and body["id"].startswith("score-")
        by_index = dict(lib_ranking(library, TEXT_RERANK, QUERY, DOCS))
        assert [(d["index"], d["object"], d["score"]) for d in body["data"]] == [
            (i, "score", by_index[i]) for i in range(len(DOCS))]
    queries = [QUERY, "Which city is in Germany?"]
    r = client.post("/score", json={"model": VL_RERANK, "text_1": queries, "text_2": DOCS[1:], "raw_scores": True})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    for i, (q, d) in enumerate(zip(queries, DOCS[1:])):
        (want,) = library[VL_RERANK].rerank(q, [d], raw_scores=True)["results"]
        assert (data[i]["index"], data[i]["score"], data[i]["raw_score"]) == (i, want["relevance_score"],
                                                                               want["raw_score"])
    r = client.post("/score", json={"model": VL_RERANK, "text_1": queries, "text_2": DOCS})
    assert r.status_code == 400 and r.json()["error"]["param"] == "text_2"
    r = client.post("/score", json={"model": VL_EMBED, "text_1": QUERY, "text_2": DOCS})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_openapi_documents_the_routes_with_served_model_ids(client):
    schema = client.get("/openapi.json").json()
    for path in ("/v1/rerank", "/v2/rerank", "/score", "/v1/score", "/v1/embeddings"):
        assert "200" in schema["paths"][path]["post"]["responses"], path
    comps = schema["components"]["schemas"]
    served_rerankers = {VL_RERANK, TEXT_RERANK}
    for name in ("RerankRequest", "CohereV2RerankRequest", "ScoreRequest"):
        assert comps[name]["examples"][0]["model"] in served_rerankers, name
    assert comps["EmbeddingRequest"]["examples"][0]["model"] == VL_EMBED
    v2_ok = schema["paths"]["/v2/rerank"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert v2_ok["$ref"].endswith("/CohereV2RerankResponse")
    assert {"index", "relevance_score", "raw_score"} <= set(comps["RerankResult"]["properties"])
    assert schema["paths"]["/v2/rerank"]["post"]["security"] == [{"bearer": []}]
