"""Long documents (issue 19): per-side token caps, truncate-or-refuse, chunked scoring with the best passage.

The oracle for "the text up to the N-th token's end offset" is the tokenizer's own decode of the first N ids of
the text encoded alone (exact for byte-level BPE whenever no character is split, which the property assumes),
so the offsets code under test (tasks/long_documents.py) is checked against an independent path. Every model
is a tiny golden checkpoint exported with vlrank.export; the server is a real one on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import vlrank
from vlrank.errors import ContextTooLongError, InvalidInputError
from server_fixtures import (  # noqa: F401 - fixtures
    AUTH,
    TEXT_RERANK,
    VL_EMBED,
    VL_RERANK,
    data_url,
    exported_models,
    image_part,
    library,
    live,
    without_id,
)

QUERY = "Which passage talks about the harbour at night?"
WORDS = ("harbour night ship lantern river stone market bread winter garden music letter window "
         "mountain engine paper lamp silver road quiet storm table").split()
TEXT_ALPHABET = st.sampled_from(list("abcdefghij klmnop.,!?-\n") + ["é", "ß", "日本", "🎉", "  ", "The "])


def prose(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


def cut(model, text: str, n: int) -> str:
    """The oracle: the text of the first n tokens of ``text`` encoded alone."""
    tok = model.runner.tokenizer
    return tok.decode(tok.encode(text)[:n])


def windows_oracle(model, text: str, size: int, overlap: int) -> list[str]:
    tok = model.runner.tokenizer
    ids = tok.encode(text)
    stride = size - overlap
    out, start = [], 0
    while True:
        out.append(tok.decode(ids[start:start + size]))
        if start + size >= len(ids):
            return out
        start += stride


def scores(result: dict) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in result["results"]}


@pytest.fixture(scope="module")
def short_rerankers(exported_models):
    """The two rerankers with max_length=160, so pairs overflow and default windows stay small."""
    return {name: vlrank.Reranker(str(exported_models[name]), max_length=160, name=name)
            for name in (TEXT_RERANK, VL_RERANK)}


# ---- caps ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [TEXT_RERANK, VL_RERANK])
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.lists(TEXT_ALPHABET, min_size=1, max_size=60).map("".join), n=st.integers(1, 30))
def test_a_capped_document_scores_like_its_text_cut_at_the_nth_token(library, name, text, n):
    model = library[name]
    expected_text = cut(model, text, n)
    assume("\ufffd" not in expected_text)
    got = model.rerank(QUERY, ["x", text], max_tokens_per_doc=n)
    want = model.rerank(QUERY, ["x", expected_text])
    assert scores(got) == scores(want)
    assert got["usage"] == want["usage"]
    assert got["results"][[r["index"] for r in got["results"]].index(1)]["document"]["text"] == text  # echo: as sent


@pytest.mark.parametrize("name", [TEXT_RERANK, VL_RERANK])
def test_the_query_cap_and_a_document_with_an_image(library, name):
    model = library[name]
    query = prose(40, 1)
    got = model.rerank(query, ["bread", "winter"], max_tokens_per_query=7)
    assert scores(got) == scores(model.rerank(cut(model, query, 7), ["bread", "winter"]))
    if name == VL_RERANK:  # the image is never cut and does not count
        doc = {"content": [{"type": "text", "text": prose(30, 2)}, image_part("gradient_130x97.png")]}
        short = {"content": [{"type": "text", "text": cut(model, prose(30, 2), 5)}, image_part("gradient_130x97.png")]}
        assert scores(model.rerank("q", [doc], max_tokens_per_doc=5)) == scores(model.rerank("q", [short]))


def test_cut_inside_a_character_keeps_the_whole_character(library):
    model = library[TEXT_RERANK]
    text = "🎉🎉🎉 done"
    tok = model.runner.tokenizer
    ids = tok.encode(text)
    for n in range(1, len(ids) + 1):
        got = model.rerank("q", [text], max_tokens_per_doc=n)
        # the kept text is a prefix of the document made of whole characters, never shorter than n tokens' bytes
        kept = next(text[:k] for k in range(len(text) + 1)
                    if scores(model.rerank("q", [text[:k]])) == scores(got))
        assert len(kept.encode()) >= len(tok.decode(ids[:n]).replace("\ufffd", "").encode())


# ---- chunks ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [TEXT_RERANK, VL_RERANK])
def test_a_chunked_document_scores_as_its_best_window(library, name):
    model = library[name]
    doc = prose(120, 3)
    windows = windows_oracle(model, doc, 24, 4)
    got = model.rerank(QUERY, [doc, "bread"], long_documents="chunk", chunk_tokens=24, chunk_overlap=4,
                       raw_scores=True)
    alone = model.rerank(QUERY, windows, raw_scores=True)
    best = alone["results"][0]
    r = next(x for x in got["results"] if x["index"] == 0)
    assert r["relevance_score"] == pytest.approx(best["relevance_score"], abs=1e-6)
    assert r["chunk"]["index"] == best["index"] and r["chunk"]["count"] == len(windows) > 3
    assert doc[r["chunk"]["start"]:r["chunk"]["end"]] == windows[best["index"]]
    assert r["document"]["text"] == doc
    one = next(x for x in got["results"] if x["index"] == 1)
    assert one["chunk"] == {"index": 0, "count": 1, "start": 0, "end": 5}
    # usage counts every window
    assert got["usage"]["prompt_tokens"] == alone["usage"]["prompt_tokens"] + model.rerank(QUERY, ["bread"])[
        "usage"]["prompt_tokens"]


def test_the_image_goes_with_every_window(library):
    model = library[VL_RERANK]
    text = prose(60, 4)
    img = image_part("gradient_130x97.png")
    doc = {"content": [{"type": "text", "text": text}, img]}
    windows = windows_oracle(model, text, 20, 0)
    got = model.rerank("q", [doc], long_documents="chunk", chunk_tokens=20, chunk_overlap=0)
    alone = model.rerank("q", [{"content": [{"type": "text", "text": w}, img]} for w in windows])
    assert got["results"][0]["relevance_score"] == pytest.approx(alone["results"][0]["relevance_score"], abs=1e-6)
    assert got["results"][0]["chunk"]["index"] == alone["results"][0]["index"]


@pytest.mark.parametrize("name", [TEXT_RERANK, VL_RERANK])
def test_default_window_fits_max_length_and_max_chunks_bounds_the_work(short_rerankers, name):
    model = short_rerankers[name]
    doc = prose(200, 5)
    got = model.rerank(QUERY, [doc], long_documents="chunk", max_chunks_per_doc=64, raw_scores=True)
    r = got["results"][0]
    count = r["chunk"]["count"]
    assert count > 2 and got["usage"]["prompt_tokens"] <= 160 * count
    # each window scores as a standalone document (no window was cut by max_length)
    window = doc[r["chunk"]["start"]:r["chunk"]["end"]]
    assert model.rerank(QUERY, [window], truncate="NONE")["results"][0]["relevance_score"] == pytest.approx(
        r["relevance_score"], abs=1e-6)
    capped = model.rerank(QUERY, [doc], long_documents="chunk", max_chunks_per_doc=2)["results"][0]["chunk"]
    assert capped["count"] == 2 and capped["end"] < len(doc)
    with pytest.raises(ContextTooLongError) as e:
        model.rerank(QUERY, ["x", doc], long_documents="chunk", max_chunks_per_doc=2, truncate="NONE")
    assert e.value.field == "documents[1]" and "max_chunks_per_doc=2" in str(e.value)


def test_max_tokens_per_doc_is_the_default_window(library):
    model = library[TEXT_RERANK]
    doc = prose(80, 6)
    a = model.rerank(QUERY, [doc], long_documents="chunk", max_tokens_per_doc=16)
    b = model.rerank(QUERY, [doc], long_documents="chunk", chunk_tokens=16)
    assert without_id(a) == without_id(b) and a["results"][0]["chunk"]["count"] > 4


# ---- refusals and bad input ------------------------------------------------------------------------------

def test_truncate_none_refuses_with_the_named_field(library, short_rerankers):
    model = library[TEXT_RERANK]
    long = prose(40, 7)
    with pytest.raises(ContextTooLongError) as e:
        model.rerank(QUERY, ["ok", long], max_tokens_per_doc=5, truncate="NONE")
    assert e.value.field == "documents[1]" and "max_tokens_per_doc=5" in str(e.value)
    with pytest.raises(ContextTooLongError) as e:
        model.rerank(long, ["ok"], max_tokens_per_query=5, truncate="NONE")
    assert e.value.field == "query"
    assert scores(model.rerank(QUERY, ["ok", "fine"], max_tokens_per_doc=5, truncate="NONE")) == scores(
        model.rerank(QUERY, ["ok", "fine"]))
    for name, short in short_rerankers.items():
        with pytest.raises(ContextTooLongError) as e:
            short.rerank(QUERY, ["ok", prose(100, 8)], truncate="NONE")
        assert e.value.field == "documents[1]" and "max_length=160" in str(e.value), name


BAD = [(field, value) for field in ("max_tokens_per_doc", "max_tokens_per_query", "chunk_tokens", "max_chunks_per_doc")
       for value in (0, -3, True, 1.5, "5")] + [("max_chunks_per_doc", 257), ("max_chunks_per_doc", 2**70)] + [("chunk_overlap", v) for v in (-1, True, 2.5, "1")] + [
    ("truncate", "MIDDLE"), ("truncate", "end"), ("truncate", None), ("long_documents", "split"),
    ("long_documents", True)]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_bad_options_are_typed_errors_naming_the_field(library, field, value):
    with pytest.raises(InvalidInputError) as e:
        library[TEXT_RERANK].rerank("q", ["d"], **{field: value})
    assert e.value.field == field and "pass" in str(e.value)


def test_overlap_not_below_the_window_and_media_over_max_length(library, short_rerankers):
    with pytest.raises(InvalidInputError) as e:
        library[TEXT_RERANK].rerank("q", ["d"], long_documents="chunk", chunk_tokens=8, chunk_overlap=8)
    assert e.value.field == "chunk_overlap"
    with pytest.raises(InvalidInputError) as e:  # a window from max_tokens_per_doc, an overlap as large
        library[TEXT_RERANK].rerank("q", [prose(20, 9)], long_documents="chunk", max_tokens_per_doc=2,
                                    chunk_overlap=2)
    assert e.value.field == "chunk_overlap"
    doc = {"content": [{"type": "text", "text": "words"}, image_part("big_2500x1700.png")]}
    with pytest.raises(ContextTooLongError) as e:
        short_rerankers[VL_RERANK].rerank("q", ["fine", doc], long_documents="chunk")
    assert e.value.field == "documents[1]" and "max_length=160" in str(e.value)


def test_rerank_many_takes_the_same_keywords(library):
    model = library[VL_RERANK]
    calls = [{"query": QUERY, "documents": [prose(80, 10), "x"], "long_documents": "chunk", "chunk_tokens": 20},
             {"query": QUERY, "documents": [prose(50, 11)], "max_tokens_per_doc": 9},
             {"query": QUERY, "documents": [prose(50, 11)], "max_tokens_per_doc": 9, "truncate": "NONE"}]
    got = model.rerank_many(calls)
    for call, result in zip(calls[:2], got):
        want = model.rerank(**call)
        assert [r["index"] for r in result["results"]] == [r["index"] for r in want["results"]]
        assert [r.get("chunk") for r in result["results"]] == [r.get("chunk") for r in want["results"]]
        assert list(scores(result).values()) == pytest.approx(list(scores(want).values()), abs=1e-6)
    assert isinstance(got[2], ContextTooLongError) and got[2].field == "documents[0]"


# ---- embeddings ------------------------------------------------------------------------------------------

def test_embed_truncate_start_keeps_the_end_and_none_refuses(library, exported_models):
    full = library[VL_EMBED]
    short = vlrank.Embedder(str(exported_models[VL_EMBED]), max_length=40, name=VL_EMBED)
    text = prose(60, 12)
    tok = full.runner.tokenizer
    ids = tok.encode(text)
    # the oracle: the fewest first tokens dropped that make the whole prompt fit 40 tokens
    suffix = next(s for s in (tok.decode(ids[d:]) for d in range(len(ids)))
                  if full.embed([s])["usage"]["prompt_tokens"] <= 40)
    got = short.embed(["tiny", text], truncate="START")
    want = full.embed(["tiny", suffix])
    assert got["usage"] == want["usage"]
    np.testing.assert_allclose(got["data"][1]["embedding"], want["data"][1]["embedding"], atol=1e-6)
    assert short.embed_many([{"input": ["tiny", text], "truncate": "START"}])[0]["usage"] == want["usage"]
    with pytest.raises(ContextTooLongError) as e:
        short.embed(["tiny", text], truncate="NONE")
    assert e.value.field == "input[1]" and "max_length=40" in str(e.value)
    assert short.embed(["tiny"], truncate="NONE")["usage"] == short.embed(["tiny"])["usage"]
    with pytest.raises(InvalidInputError) as e:
        short.embed("x", truncate="MIDDLE")
    assert e.value.field == "truncate"


# ---- the server answers what the library answers ----------------------------------------------------------

@pytest.fixture()
def client(live):
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as c:
        yield c


def test_server_rerank_routes_equal_the_library(client, library):
    doc = prose(100, 13)
    options = {"long_documents": "chunk", "chunk_tokens": 20, "chunk_overlap": 2, "max_chunks_per_doc": 8}
    for model in (TEXT_RERANK, VL_RERANK):
        r = client.post("/v1/rerank", json={"model": model, "query": QUERY, "documents": [doc, "x"], **options})
        assert r.status_code == 200, r.text
        assert without_id(r.json()) == without_id(library[model].rerank(QUERY, [doc, "x"], **options))
        v2 = client.post("/v2/rerank", json={"model": model, "query": QUERY, "documents": [doc, "x"],
                                             "max_tokens_per_doc": 12})
        assert v2.status_code == 200, v2.text
        want = library[model].rerank(QUERY, [doc, "x"], max_tokens_per_doc=12, return_documents=False)
        assert v2.json()["results"] == want["results"] and "warnings" not in v2.json()["meta"]
        assert v2.json()["meta"]["tokens"]["input_tokens"] == want["usage"]["prompt_tokens"]
        for path in ("/score", "/v1/score"):
            s = client.post(path, json={"model": model, "text_1": doc, "text_2": [doc, "x"], "max_tokens_per_doc": 7,
                                        "max_tokens_per_query": 9})
            assert s.status_code == 200, s.text
            lib = library[model].rerank(cut(library[model], doc, 9), [doc, "x"], max_tokens_per_doc=7)
            assert [d["score"] for d in s.json()["data"]] == [scores(lib)[0], scores(lib)[1]]


def test_server_embeddings_truncate_and_errors(client, library):
    text = prose(40, 14)
    r = client.post("/v1/embeddings", json={"model": VL_EMBED, "input": [text], "truncate": "START"})
    assert r.status_code == 200, r.text
    assert r.json() == library[VL_EMBED].embed([text], truncate="START")
    bad = client.post("/v1/embeddings", json={"model": VL_EMBED, "input": "x", "truncate": "MIDDLE"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "truncate"


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/v1/rerank", {"documents": ["ok", prose(30, 15)], "max_tokens_per_doc": 4, "truncate": "NONE"}, 413,
     "documents[1]"),
    ("/v2/rerank", {"documents": ["ok"], "query": prose(30, 15), "max_tokens_per_query": 4, "truncate": "NONE"}, 413,
     "query"),
    ("/score", {"text_1": "q", "text_2": ["ok", prose(30, 15)], "max_tokens_per_doc": 0}, 400, "max_tokens_per_doc"),
    ("/v1/rerank", {"documents": ["d"], "max_tokens_per_doc": 1.5}, 400, "max_tokens_per_doc"),
    ("/v1/rerank", {"documents": ["d"], "chunk_tokens": "5"}, 400, "chunk_tokens"),
    ("/v1/rerank", {"documents": ["d"], "truncate": "START"}, 400, "truncate"),
    ("/v1/rerank", {"documents": ["d"], "long_documents": "split"}, 400, "long_documents"),
    ("/v1/rerank", {"documents": ["d"], "max_chunks_per_doc": 0}, 400, "max_chunks_per_doc"),
    ("/v1/rerank", {"documents": ["d"], "long_documents": "chunk", "chunk_tokens": 4, "chunk_overlap": 4}, 400,
     "chunk_overlap"),
])
def test_server_errors_name_the_field(client, path, body, status, param):
    body = {"model": TEXT_RERANK, "query": "q", **body}
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and "Traceback" not in r.text and "/tmp" not in r.text


def test_openapi_documents_the_fields(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    for model in ("RerankRequest", "CohereV2RerankRequest"):
        props = schema[model]["properties"]
        for name in ("max_tokens_per_doc", "max_tokens_per_query", "truncate", "long_documents", "chunk_tokens",
                     "chunk_overlap", "max_chunks_per_doc"):
            assert props[name].get("description"), (model, name)
    assert "max_tokens_per_doc" in schema["ScoreRequest"]["properties"]
    assert "START" in str(schema["EmbeddingRequest"]["properties"]["truncate"])
    assert "chunk" in schema["RerankResult"]["properties"]


# ---- the command line and Ray pass the same arguments through ---------------------------------------------

def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlrank.cli", *map(str, args)], capture_output=True,
                          env=dict(os.environ), timeout=300)


def test_cli_flags_equal_the_library(exported_models, library):
    doc = prose(90, 16)
    run = _cli("rerank", "--model", exported_models[TEXT_RERANK], "--query", QUERY, "--document", doc,
               "--document", "x", "--chunk", "--chunk-tokens", "20", "--chunk-overlap", "3", "--max-chunks", "9",
               "--max-tokens-per-query", "6")
    assert run.returncode == 0, run.stderr.decode()
    want = library[TEXT_RERANK].rerank(QUERY, [doc, "x"], long_documents="chunk", chunk_tokens=20, chunk_overlap=3,
                                       max_chunks_per_doc=9, max_tokens_per_query=6)
    got = json.loads(run.stdout)
    assert [(r["index"], r["chunk"]) for r in got["results"]] == [(r["index"], r["chunk"]) for r in want["results"]]
    assert list(scores(got).values()) == pytest.approx(list(scores(want).values()), abs=1e-6)
    refused = _cli("rerank", "--model", exported_models[TEXT_RERANK], "--query", "q", "--document", doc,
                   "--max-tokens-per-doc", "3", "--truncate", "NONE")
    err = refused.stderr.decode()
    assert refused.returncode != 0 and "documents[0]" in err and "Traceback" not in err
    emb = _cli("embed", "--model", exported_models[VL_EMBED], doc, "--truncate", "START")
    assert emb.returncode == 0, emb.stderr.decode()
    assert json.loads(emb.stdout)["usage"] == library[VL_EMBED].embed([doc], truncate="START")["usage"]


def test_ray_rerank_dataset_passes_the_options_through(exported_models, library):
    import ray

    from vlrank.ray import rerank_dataset

    with pytest.raises(InvalidInputError) as e:  # checked on the driver, before anything starts
        rerank_dataset(None, model=exported_models[TEXT_RERANK], query_column="q", documents_column="d",
                       rerank_options={"chunk_overlap": -1})
    assert e.value.field == "chunk_overlap"
    options = {"long_documents": "chunk", "chunk_tokens": 16, "max_tokens_per_query": 5}
    rows = [{"q": QUERY, "d": [prose(40, 17 + i), "x"]} for i in range(3)]
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        out = rerank_dataset(ray.data.from_items(rows), model=exported_models[TEXT_RERANK], query_column="q",
                             documents_column="d", rerank_options=options).take_all()
    finally:
        ray.shutdown()
    for row in out:
        want = library[TEXT_RERANK].rerank(row["q"], row["d"], **options)
        assert row["error"] is None
        assert list(row["scores"]) == pytest.approx([scores(want)[0], scores(want)[1]], abs=1e-6)
