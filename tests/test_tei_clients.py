"""The TEI client libraries RAG stacks already run, pointed at a real server (uvicorn on 127.0.0.1): LlamaIndex
``TextEmbeddingsInference`` (embeddings) and ``TextEmbeddingInference`` (the TEI rerank postprocessor), and
Haystack's Hugging Face API integration (``HuggingFaceAPITextEmbedder`` / ``HuggingFaceAPIDocumentEmbedder``
with ``api_type="text_embeddings_inference"``, ``HuggingFaceTEIRanker``). Each gets the library's vectors and
scores to 1e-6, with the server's key as the client sends it and no ``model`` in the body (TEI serves one model:
the server's --tei-default reranker and its only embedding model answer).

LangChain's ``HuggingFaceEndpointEmbeddings`` is not here: since langchain-huggingface 1.2.2 it refuses a URL
(``model`` must be a Hub repo id) and has no other way to name a self-hosted TEI; LangChain's TEI guide now
points at ``OpenAIEmbeddings`` on ``/v1/embeddings``, which tests/test_clients.py runs.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from server_fixtures import (  # noqa: F401 - fixtures
    KEY, VL_EMBED, VL_RERANK, exported_models, library, make_facades)
from server_support import LiveServer

# Haystack sends usage telemetry unless told not to; a test run must not try to reach the network.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

QUERY = "What is the capital of France?"
TEXTS = ["Paris is the capital of France.", "London is the capital of England.", "Berlin is in Germany."]
LONG = "tokens " * 9000 + "end"  # over the tiny embedder's 8,192-token max_length


@pytest.fixture(scope="module")
def tei(exported_models):
    """A server with auth on whose TEI routes need no ``model``: --tei-default picks the VL reranker and the
    VL embedder is the only embedding model (two rerankers are served, as in the other server tests)."""
    from vlrank.server import ServerSettings, create_app

    app = create_app(make_facades(exported_models), settings=ServerSettings(api_key=KEY, tei_default=VL_RERANK,
                                                                            max_documents=50))
    server = LiveServer(app).start()
    yield server
    server.stop()


def lib_vectors(library, texts, **kw) -> np.ndarray:
    return np.asarray([d["embedding"] for d in library[VL_EMBED].embed(texts, **kw)["data"]], dtype=np.float64)


def lib_scores(library, *, raw: bool = False) -> dict[int, float]:
    key = "raw_score" if raw else "relevance_score"
    return {r["index"]: r[key] for r in library[VL_RERANK].rerank(QUERY, TEXTS, raw_scores=True)["results"]}


# ---- LlamaIndex ---------------------------------------------------------------------------------------------

def test_llamaindex_text_embeddings_inference(tei, library):
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    # model_name only picks a client-side instruction (BGE / instructor names); any other name sends the text.
    emb = TextEmbeddingsInference(model_name=VL_EMBED, base_url=tei.url, auth_token=KEY, embed_batch_size=2)
    got = np.asarray(emb.get_text_embedding_batch(TEXTS))  # two requests: batches of 2 and 1
    assert got.shape == lib_vectors(library, TEXTS).shape
    assert np.abs(got - lib_vectors(library, TEXTS)).max() < 1e-6
    query = np.asarray(emb.get_query_embedding(QUERY))
    assert np.abs(query - lib_vectors(library, [QUERY])[0]).max() < 1e-6
    # It sends truncate=true: an over-long text is cut at its end, as the library's default.
    cut = np.asarray(emb.get_text_embedding(LONG))
    assert np.abs(cut - lib_vectors(library, [LONG], truncate="END")[0]).max() < 1e-6


def test_llamaindex_text_embeddings_inference_async_and_no_truncation(tei, library):
    import asyncio

    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    emb = TextEmbeddingsInference(model_name=VL_EMBED, base_url=tei.url, auth_token=KEY, truncate_text=False)
    got = np.asarray(asyncio.run(emb.aget_text_embedding_batch(TEXTS)))
    assert np.abs(got - lib_vectors(library, TEXTS)).max() < 1e-6
    # truncate=false refuses an over-long input; the client indexes TEI's error body (a dict) and fails there.
    body = emb._call_api([TEXTS[0], LONG])  # the client's own request, to read the answer it gets
    assert set(body) == {"error", "error_type"} and body["error_type"] == "Validation"
    assert body["error"].startswith("inputs[1]"), body
    with pytest.raises(KeyError):
        emb.get_text_embedding(LONG)


def test_llamaindex_tei_rerank_postprocessor(tei, library):
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    # This client sends its auth_token as the whole Authorization header.
    rerank = TextEmbeddingInference(base_url=tei.url, auth_token=f"Bearer {KEY}", top_n=2)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(TEXTS)]
    got = rerank.postprocess_nodes(nodes, query_str=QUERY)
    want = lib_scores(library)
    best = sorted(want, key=lambda i: -want[i])[:2]
    assert [int(n.node.id_) for n in got] == best
    assert all(abs(n.score - want[int(n.node.id_)]) < 1e-6 for n in got)


# ---- Haystack -----------------------------------------------------------------------------------------------

def tei_embedder(cls, url: str, **kw):
    from haystack.utils import Secret

    # The embedder posts to the URL it is given (TEI serves /embed there too): name the route.
    return cls(api_type="text_embeddings_inference", api_params={"url": f"{url}/embed"},
               token=Secret.from_token(KEY), **kw)


def test_haystack_tei_text_and_document_embedders(tei, library):
    from haystack import Document
    from haystack_integrations.components.embedders.huggingface_api import (
        HuggingFaceAPIDocumentEmbedder, HuggingFaceAPITextEmbedder)

    text = tei_embedder(HuggingFaceAPITextEmbedder, tei.url, normalize=True)
    got = np.asarray(text.run(text=QUERY)["embedding"])
    assert np.abs(got - lib_vectors(library, [QUERY])[0]).max() < 1e-6
    docs = tei_embedder(HuggingFaceAPIDocumentEmbedder, tei.url, normalize=True, batch_size=2,
                        progress_bar=False)
    out = docs.run(documents=[Document(content=t) for t in TEXTS])["documents"]
    got = np.asarray([d.embedding for d in out])
    assert np.abs(got - lib_vectors(library, TEXTS)).max() < 1e-6


def test_haystack_default_normalize_false_is_refused_by_name(tei):
    from huggingface_hub.errors import HfHubHTTPError
    from haystack_integrations.components.embedders.huggingface_api import HuggingFaceAPITextEmbedder

    # Haystack sends normalize=false unless told otherwise; Qwen3 vectors are always unit length, so the server
    # answers TEI's 400 naming the field instead of returning something else than asked.
    text = tei_embedder(HuggingFaceAPITextEmbedder, tei.url)
    with pytest.raises(HfHubHTTPError) as err:
        text.run(text=QUERY)
    assert err.value.response.status_code == 400
    assert err.value.response.json()["error"].startswith("normalize")


def test_haystack_tei_ranker(tei, library):
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker, TruncationDirection

    documents = [Document(content=t, id=str(i)) for i, t in enumerate(TEXTS)]
    ranker = HuggingFaceTEIRanker(url=tei.url, token=Secret.from_token(KEY), top_k=3)
    want = lib_scores(library)
    got = ranker.run(query=QUERY, documents=documents)["documents"]
    assert [d.id for d in got] == [str(i) for i in sorted(want, key=lambda i: -want[i])]
    assert all(abs(d.score - want[int(d.id)]) < 1e-6 for d in got)
    raw = HuggingFaceTEIRanker(url=tei.url, token=Secret.from_token(KEY), raw_scores=True, top_k=1)
    (best,) = raw.run(query=QUERY, documents=documents, truncation_direction=TruncationDirection.RIGHT)["documents"]
    logits = lib_scores(library, raw=True)
    assert abs(best.score - logits[int(best.id)]) < 1e-6 and logits[int(best.id)] == max(logits.values())
