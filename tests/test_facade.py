"""The public facade: every text-only golden case through Reranker / Embedder, result shapes, batching
properties and typed errors."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_support import GOLDEN, TEXT_CKPT, VL_CKPT, cases, exported
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vlrank
from vlrank.errors import InvalidInputError, ModelDirectoryError

WORDS = ["capital", "France", "Paris", "logo", "red", "blue", "the", "of", "is", "a", "x", "é", "東京", "?", "\n"]


def _side(spec: dict) -> dict:
    return {"content": [{"type": "text", "text": t} for t in spec.get("texts", [])]}


def _text_only(spec: dict) -> bool:
    return not spec.get("images")


@pytest.fixture(scope="module")
def text_rr() -> vlrank.Reranker:
    return vlrank.Reranker(exported(TEXT_CKPT, "rerank"))


@pytest.fixture(scope="module")
def vl_rr() -> vlrank.Reranker:
    return vlrank.Reranker(exported(VL_CKPT, "rerank"))


@pytest.fixture(scope="module")
def vl_em() -> vlrank.Embedder:
    return vlrank.Embedder(exported(VL_CKPT, "embed"))


# ---- golden through the public API ------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases("text_rerank.json"))
def test_text_rerank_golden(case: dict) -> None:
    rr = vlrank.Reranker(exported(TEXT_CKPT, "rerank"), max_length=case["max_length"])
    out = rr.rerank(case["query"], case["documents"], instruction=case["instruction"])
    by_index = {r["index"]: r for r in out["results"]}
    assert sorted(by_index) == list(range(len(case["documents"])))
    for i, ref in enumerate(case["results"]):
        assert abs(by_index[i]["relevance_score"] - ref["score"]) <= 1e-4
        assert by_index[i]["document"] == {"text": case["documents"][i], "multi_modal": None}
    assert out["usage"]["prompt_tokens"] == out["usage"]["total_tokens"] == sum(r["prompt_tokens"] for r in case["results"])


@pytest.mark.parametrize("case", cases("vl_rerank.json"))
def test_vl_rerank_golden_text_documents(case: dict) -> None:
    """Every text-only document of every case (the image documents are the vision tests' business)."""
    keep = [i for i, d in enumerate(case["documents"]) if _text_only(d)]
    rr = vlrank.Reranker(exported(VL_CKPT, "rerank"), max_length=case["max_length"])
    out = rr.rerank(_side(case["query"]), [_side(case["documents"][i]) for i in keep],
                    instruction=case["instruction"])
    by_index = {r["index"]: r["relevance_score"] for r in out["results"]}
    for j, i in enumerate(keep):
        assert abs(by_index[j] - case["results"][i]["score"]) <= 1e-4
    assert out["usage"]["prompt_tokens"] == sum(case["results"][i]["prompt_tokens"] for i in keep)


@pytest.mark.parametrize("case", [c for c in cases("vl_embed.json") if _text_only(c["input"])])
def test_vl_embed_golden(case: dict, vl_em: vlrank.Embedder) -> None:
    out = vl_em.embed(_side(case["input"]), instruction=case["instruction"])
    vec = np.asarray(out["data"][0]["embedding"])
    ref = np.asarray(case["embedding"])
    assert float(vec @ ref) / float(np.linalg.norm(ref)) >= 0.99999
    assert out["usage"]["prompt_tokens"] == case["prompt_tokens"]
    dim8 = vl_em.embed(_side(case["input"]), instruction=case["instruction"], dimensions=8)
    np.testing.assert_allclose(dim8["data"][0]["embedding"], case["embedding_dim8"], atol=1e-4)


# ---- shapes ---------------------------------------------------------------------------------------------
def test_rerank_result_shape(text_rr: vlrank.Reranker) -> None:
    docs = ["Paris is the capital of France.", "blue squares", ""]
    out = text_rr.rerank("What is the capital of France?", docs)
    assert set(out) == {"id", "object", "model", "results", "usage"}
    assert out["id"].startswith("rerank-") and len(out["id"]) == len("rerank-") + 32
    assert out["object"] == "list" and out["model"] == "tiny-qwen3-text"
    scores = [r["relevance_score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(set(r) == {"index", "document", "relevance_score"} for r in out["results"])
    top = text_rr.rerank("What is the capital of France?", docs, top_n=2, return_documents=False)
    assert [r["index"] for r in top["results"]] == [r["index"] for r in out["results"][:2]]
    assert all(set(r) == {"index", "relevance_score"} for r in top["results"])
    assert top["usage"] == out["usage"]  # every pair was scored
    assert len(text_rr.rerank("q", docs, top_n=10)["results"]) == 3
    named = vlrank.Reranker(exported(TEXT_CKPT, "rerank"), name="my-model")
    assert named.rerank("q", ["d"])["model"] == "my-model"


def test_embed_result_shape_and_base64(vl_em: vlrank.Embedder) -> None:
    texts = ["The food was delicious.", "", "東京タワー"]
    out = vl_em.embed(texts)
    assert out["object"] == "list" and out["model"] == "tiny-qwen3-vl"
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in out["data"])
    b64 = vl_em.embed(texts, encoding_format="base64")
    for d_float, d_b64 in zip(out["data"], b64["data"]):
        decoded = np.frombuffer(base64.b64decode(d_b64["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.asarray(d_float["embedding"], dtype=np.float32))
    short = vl_em.embed(texts, dimensions=4)
    for d in short["data"]:
        assert len(d["embedding"]) == 4 and abs(np.linalg.norm(d["embedding"]) - 1) < 1e-6
    msg = vl_em.embed(messages=[{"role": "user", "content": "The food was delicious."}])
    np.testing.assert_allclose(msg["data"][0]["embedding"], out["data"][0]["embedding"], atol=1e-6)


def test_many_calls_one_plan(text_rr: vlrank.Reranker, vl_em: vlrank.Embedder) -> None:
    calls = [{"query": "red logo", "documents": ["a red circle logo", "blue"]},
             {"query": "q", "documents": []},
             {"query": "capital", "documents": ["Paris", "x " * 40], "top_n": 1}]
    many = text_rr.rerank_many(calls)
    assert isinstance(many[1], InvalidInputError)
    for call, got in zip([calls[0], calls[2]], [many[0], many[2]]):
        single = text_rr.rerank(**call)
        assert [r["index"] for r in got["results"]] == [r["index"] for r in single["results"]]
        for a, b in zip(got["results"], single["results"]):
            assert abs(a["relevance_score"] - b["relevance_score"]) <= 1e-6
        assert got["usage"] == single["usage"]
    em = vl_em.embed_many([{"input": ["a", "b"]}, {"input": "c", "dimensions": 0}, {"input": "d"}])
    assert isinstance(em[1], InvalidInputError)
    np.testing.assert_allclose(em[2]["data"][0]["embedding"], vl_em.embed("d")["data"][0]["embedding"], atol=1e-6)


# ---- properties ---------------------------------------------------------------------------------------------
_docs = st.lists(st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join), min_size=1, max_size=6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=_docs, seed=st.integers(0, 2**16))
def test_batch_equals_single_and_shuffle_permutes(text_rr: vlrank.Reranker, docs: list[str], seed: int) -> None:
    query = "What is the capital of France?"
    batch = {r["index"]: r["relevance_score"] for r in text_rr.rerank(query, docs)["results"]}
    for i, d in enumerate(docs):
        single = text_rr.rerank(query, [d])["results"][0]["relevance_score"]
        assert abs(batch[i] - single) <= 1e-5
    perm = np.random.default_rng(seed).permutation(len(docs))
    shuffled = text_rr.rerank(query, [docs[i] for i in perm])
    for r in shuffled["results"]:
        assert abs(r["relevance_score"] - batch[int(perm[r["index"]])]) <= 1e-5


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=_docs)
def test_vl_batch_equals_single(vl_rr: vlrank.Reranker, vl_em: vlrank.Embedder, texts: list[str]) -> None:
    batch = {r["index"]: r["relevance_score"] for r in vl_rr.rerank("red logo", texts)["results"]}
    vecs = vl_em.embed(texts)["data"]
    for i, t in enumerate(texts):
        assert abs(batch[i] - vl_rr.rerank("red logo", [t])["results"][0]["relevance_score"]) <= 1e-5
        single = np.asarray(vl_em.embed(t)["data"][0]["embedding"])
        assert float(single @ np.asarray(vecs[i]["embedding"])) >= 0.99999


def test_small_batch_budget_changes_nothing() -> None:
    docs = ["Paris is the capital of France.", "x " * 60, "", "blue squares", "a red circle logo"]
    big = vlrank.Reranker(exported(TEXT_CKPT, "rerank")).rerank("capital", docs)
    small = vlrank.Reranker(exported(TEXT_CKPT, "rerank"), batch_tokens=100).rerank("capital", docs)
    assert [r["index"] for r in big["results"]] == [r["index"] for r in small["results"]]
    for a, b in zip(big["results"], small["results"]):
        assert abs(a["relevance_score"] - b["relevance_score"]) <= 1e-5


# ---- errors ------------------------------------------------------------------------------------------------------
def test_bad_rerank_input(text_rr: vlrank.Reranker) -> None:
    with pytest.raises(InvalidInputError) as err:
        text_rr.rerank("q", [])
    assert err.value.field == "documents"
    for top_n in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError) as err:
            text_rr.rerank("q", ["d"], top_n=top_n)
        assert err.value.field == "top_n"
    with pytest.raises(InvalidInputError) as err:
        text_rr.rerank("q", ["d"], instruction=3)
    assert err.value.field == "instruction"
    png = sorted((GOLDEN / "images").glob("*.png"))[0]
    image = {"content": [{"type": "image_url", "image_url": {"url": str(png)}}]}
    with pytest.raises(InvalidInputError, match="text reranker") as err:
        text_rr.rerank("q", ["d", image])
    assert err.value.field == "documents[1]"


def test_bad_embed_input(vl_em: vlrank.Embedder) -> None:
    for dims in (0, -3, vl_em.dimensions + 1, 2.5):
        with pytest.raises(InvalidInputError) as err:
            vl_em.embed("x", dimensions=dims)
        assert err.value.field == "dimensions"
    with pytest.raises(InvalidInputError) as err:
        vl_em.embed("x", encoding_format="binary")
    assert err.value.field == "encoding_format"
    with pytest.raises(InvalidInputError):
        vl_em.embed()


def test_context_and_length_limits(text_rr: vlrank.Reranker) -> None:
    for bad in (0, 40000, 32769):
        with pytest.raises(InvalidInputError) as err:
            vlrank.Reranker(exported(TEXT_CKPT, "rerank"), max_length=bad)
        assert err.value.field == "max_length"
    # A document longer than max_length is cut (the reference's rule), never silently over the context.
    long_doc = "word " * 20000
    out = vlrank.Reranker(exported(TEXT_CKPT, "rerank"), max_length=300).rerank("q", [long_doc])
    assert out["usage"]["prompt_tokens"] == 300
    with pytest.raises(InvalidInputError, match="fixed prompt") as err:
        vlrank.Reranker(exported(TEXT_CKPT, "rerank"), max_length=20).rerank("q", ["d"])
    assert err.value.field == "max_length"


def test_model_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelDirectoryError):
        vlrank.Reranker(tmp_path / "missing")
    with pytest.raises(ModelDirectoryError, match="Embedder"):
        vlrank.Reranker(exported(VL_CKPT, "embed"))
    with pytest.raises(InvalidInputError):
        vlrank.Reranker(exported(TEXT_CKPT, "rerank"), providers="tpu")
    with pytest.raises(InvalidInputError):
        vlrank.Reranker(exported(TEXT_CKPT, "rerank"), min_pixels=10, max_pixels=5)
    with pytest.warns(RuntimeWarning, match="CUDA"):
        vlrank.Reranker(exported(TEXT_CKPT, "rerank"), providers="cuda")


def test_raw_checkpoint_is_exported_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLRANK_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "Qwen3-Reranker-tiny"
    shutil.copytree(TEXT_CKPT, src)
    first = vlrank.Reranker(src)
    assert first.name == "Qwen3-Reranker-tiny"
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and (cached[0] / "vlrank.json").is_file()
    mtime = (cached[0] / "decoder.onnx").stat().st_mtime_ns
    second = vlrank.Reranker(src)
    assert (cached[0] / "decoder.onnx").stat().st_mtime_ns == mtime
    ref = vlrank.Reranker(exported(TEXT_CKPT, "rerank")).rerank("capital", ["Paris"])
    got = second.rerank("capital", ["Paris"])
    assert abs(got["results"][0]["relevance_score"] - ref["results"][0]["relevance_score"]) <= 1e-6
    vl = tmp_path / "Qwen3-VL-Embedding-tiny"
    shutil.copytree(VL_CKPT, vl)
    assert vlrank.Embedder(vl).embed("x")["model"] == "Qwen3-VL-Embedding-tiny"


# ---- CLI ------------------------------------------------------------------------------------------------------------
def test_cli_rerank_and_embed(tmp_path: Path) -> None:
    model = str(exported(TEXT_CKPT, "rerank"))
    run = [sys.executable, "-m", "vlrank.cli"]
    out = subprocess.run(run + ["rerank", "--model", model, "--query", "capital of France", "--document", "Paris",
                                "--document", "blue", "--top-n", "1"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert len(res["results"]) == 1 and res["object"] == "list"
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps("Paris") + "\n" + json.dumps({"text": "blue"}) + "\n")
    out = subprocess.run(run + ["rerank", "--model", model, "--query", "q", "--documents", str(docs)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["results"]) == 2
    out = subprocess.run(run + ["embed", "--model", str(exported(VL_CKPT, "embed")), "hello", "world",
                                "--dimensions", "8"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["data"]
    assert len(data) == 2 and len(data[0]["embedding"]) == 8
    bad = subprocess.run(run + ["rerank", "--model", model, "--query", "q"], capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_ort_options_reach_every_session() -> None:
    """A server passes ONNX Runtime config entries (no spinning threads); they reach the decoder and the
    vision tower, and the scores do not change."""
    model = exported(VL_CKPT, "rerank")
    plain = vlrank.Reranker(str(model))
    quiet = vlrank.Reranker(str(model), ort_options={"session.intra_op.allow_spinning": "0"})
    for session in (quiet.runner.session, quiet.tower().session):
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    docs = ["Paris is the capital of France.", "Berlin is the capital of Germany."]
    assert [r["relevance_score"] for r in quiet.rerank("capital of France?", docs)["results"]] == \
        [r["relevance_score"] for r in plain.rerank("capital of France?", docs)["results"]]
    with pytest.raises(InvalidInputError) as err:
        vlrank.Embedder(str(exported(VL_CKPT, "embed")), ort_options={"session.intra_op.allow_spinning": 0})
    assert err.value.field == "ort_options"
