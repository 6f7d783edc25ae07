"""Shared prompt prefixes (engine/prefix.py): a rerank call's system + instruction + query run once, each
document's suffix against its K/V. Scores with ``share_prefix=True`` equal ``share_prefix=False`` (the full
prompts) on every golden rerank case — text, images, videos, truncated — and the golden scores; random
calls, orders and batch splits keep them; a real server shares across a batch; bad inputs are typed."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vlrank
from export_support import GOLDEN, TEXT_CKPT, VL_CKPT, cases, exported
from server_support import LiveServer
from vlrank.engine.budget import MemoryBudget
from vlrank.engine.prefix import SHARE_MIN_SAVING, plan_groups
from vlrank.engine.runner import Row
from vlrank.errors import InvalidInputError, ModelDirectoryError
from vlrank.export import export
from vlrank.modeldir import MANIFEST, read_manifest

TEXT_TOL, MEDIA_TOL = 1e-5, 1e-4
VIDEO_PIXELS = (4096, 1843200)  # the golden video cases' pixel budget


class Recording:
    """An ONNX Runtime session that records each run's feeds' shapes (the runs themselves are real)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs: list[dict[str, tuple]] = []

    def run(self, outputs, feeds):
        self.runs.append({k: np.shape(v) for k, v in feeds.items()})
        return self.session.run(outputs, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


_MODELS: dict[tuple, vlrank.Reranker] = {}
_PREFIX_EXPORTS: dict[tuple, Path] = {}
_TMP = Path(tempfile.mkdtemp(prefix="vlrank-test-prefix-"))


def prefix_export(ckpt: Path, precision: str = "float32") -> Path:
    """A rerank export with the shared-prefix inputs (``prefix_kv=True``), once per session."""
    key = (ckpt.name, precision)
    if key not in _PREFIX_EXPORTS:
        _PREFIX_EXPORTS[key] = export(ckpt, _TMP / f"{ckpt.name}-{precision}", task="rerank", dtype=precision,
                                      precision=precision, prefix_kv=True, progress=False)
    return _PREFIX_EXPORTS[key]


def model(ckpt: Path, share: bool | None, **kw: Any) -> vlrank.Reranker:
    key = (ckpt.name, share, tuple(sorted(kw.items())))
    if key not in _MODELS:
        rr = vlrank.Reranker(prefix_export(ckpt), share_prefix=share, providers="cpu", **kw)
        rr.runner.session = Recording(rr.runner.session)
        _MODELS[key] = rr
    return _MODELS[key]


def prefix_runs(rr: vlrank.Reranker) -> int:
    return sum("prefix_keep" in feeds for feeds in rr.runner.session.runs)


def by_index(out: dict) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in out["results"]}


def side(spec: dict) -> dict:
    parts = [{"type": "video_url", "video_url": {"url": (GOLDEN / v).as_uri()}} if isinstance(v, str)
             else {"type": "video", "video": [str(GOLDEN / f) for f in v]} for v in spec.get("videos", [])]
    parts += [{"type": "image_url", "image_url": {"url": (GOLDEN / p).as_uri()}} for p in spec.get("images", [])]
    parts += [{"type": "text", "text": t} for t in spec.get("texts", [])]
    return {"content": parts}


def on_off(ckpt: Path, call: dict, tol: float, **kw: Any) -> tuple[dict, dict]:
    """The call with sharing forced on and off: equal scores, and the shared path really ran."""
    on, off = model(ckpt, True, **kw), model(ckpt, False, **kw)
    before = prefix_runs(on)
    got, want = on.rerank(**call), off.rerank(**call)
    for i, score in by_index(want).items():
        assert abs(by_index(got)[i] - score) <= tol, (i, by_index(got), by_index(want))
    assert got["usage"] == want["usage"]
    if len(call["documents"]) > 1:
        assert prefix_runs(on) > before  # the prefix ran once for the call's documents
    assert prefix_runs(off) == 0
    return got, want


# ---- every golden rerank case ------------------------------------------------------------------------------

@pytest.mark.parametrize("i", range(len(cases("text_rerank.json"))))
def test_golden_text_cases_on_equal_off(i: int) -> None:
    case = cases("text_rerank.json")[i]
    call = dict(query=case["query"], documents=case["documents"], instruction=case["instruction"])
    got, _ = on_off(TEXT_CKPT, call, TEXT_TOL, max_length=case["max_length"])
    for j, res in enumerate(case["results"]):
        assert abs(by_index(got)[j] - res["score"]) <= 1e-4


@pytest.mark.parametrize("i", range(len(cases("vl_rerank.json"))))
def test_golden_vl_cases_on_equal_off(i: int) -> None:
    case = cases("vl_rerank.json")[i]
    media = bool(case["query"].get("images")) or any(d.get("images") for d in case["documents"])
    call = dict(query=side(case["query"]), documents=[side(d) for d in case["documents"]],
                instruction=case["instruction"])
    got, _ = on_off(VL_CKPT, call, MEDIA_TOL if media else TEXT_TOL, max_length=case["max_length"],
                    min_pixels=case["min_pixels"], max_pixels=case["max_pixels"])
    for j, res in enumerate(case["results"]):
        assert abs(by_index(got)[j] - res["score"]) <= 1e-4


@pytest.mark.parametrize("i", range(len(cases("video_rerank.json"))))
def test_golden_video_cases_on_equal_off(i: int) -> None:
    case = cases("video_rerank.json")[i]
    call = dict(query=side(case["query"]), documents=[side(d) for d in case["documents"]],
                instruction=case["instruction"])
    got, _ = on_off(VL_CKPT, call, MEDIA_TOL, max_length=case["max_length"], min_pixels=VIDEO_PIXELS[0],
                    max_pixels=VIDEO_PIXELS[1])
    for j, res in enumerate(case["results"]):
        assert abs(by_index(got)[j] - res["score"]) <= 1e-3  # the video golden tests' bar


def test_a_query_image_is_encoded_into_the_prefix_once() -> None:
    """The query's image (and its DeepStack features) enters only the prefix run; documents with their own
    images feed only those to their suffix runs."""
    query = side({"images": ["images/gradient_130x97.png"], "texts": ["which one is a gradient?"]})
    docs = [side({"texts": ["a smooth gradient"]}), side({"images": ["images/palette_64x64.png"]}),
            side({"texts": ["noise"], "images": ["images/rgb_noise_70x50.png"]}), "plain text"]
    on_off(VL_CKPT, dict(query=query, documents=docs), MEDIA_TOL)
    runs = model(VL_CKPT, True).runner.session.runs
    prefix = [r for r in runs if "prefix_keep" in r][-1]
    suffixes = [r for r in runs if "past_key.0" in r][-len(docs):]
    assert prefix["image_embeds"][0] > 0  # the query image's features went to the prefix run
    assert [s["image_embeds"][0] > 0 for s in suffixes].count(True) == 2  # only the documents' own images


@pytest.mark.parametrize("ckpt", [TEXT_CKPT, VL_CKPT])
def test_chunked_long_documents_share_the_query(ckpt: Path) -> None:
    doc = " ".join(f"word{i} about the capital of France" for i in range(16))
    call = dict(query="What is the capital of France?", documents=[doc, "Paris"], long_documents="chunk",
                chunk_tokens=24)
    got, want = on_off(ckpt, call, TEXT_TOL)
    chunked = next(r for r in got["results"] if r["index"] == 0)
    assert chunked["chunk"]["count"] > 1 and chunked["chunk"] == next(r for r in want["results"] if r["index"] == 0)["chunk"]


# ---- random calls, orders, batch splits -------------------------------------------------------------------

WORDS = st.sampled_from(["paris", "capital", "france", "berlin", "the", "a", "river", "cat", "logo", "red",
                         "is", "of", "what", "where", "blue", "sky", "ocean", "tree", "?", "."])
TEXTS = st.lists(WORDS, min_size=1, max_size=12).map(" ".join)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(queries=st.lists(TEXTS, min_size=1, max_size=3), docs=st.lists(TEXTS, min_size=1, max_size=6),
       split=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_random_calls_orders_and_batch_splits_keep_the_scores(queries, docs, split, seed) -> None:
    on, off = model(TEXT_CKPT, True), model(TEXT_CKPT, False)
    order = np.random.default_rng(seed).permutation(len(docs))
    calls = [{"query": q, "documents": docs} for q in queries]
    calls += [{"query": queries[0], "documents": [docs[j] for j in order]}]
    want = [by_index(r) for r in off.rerank_many(calls)]
    parts = [on.rerank_many(calls[:split]), on.rerank_many(calls[split:])] if split < len(calls) else \
        [on.rerank_many(calls)]
    got = [by_index(r) for part in parts for r in part]
    for g, w in zip(got, want):
        assert g.keys() == w.keys() and all(abs(g[i] - w[i]) <= TEXT_TOL for i in w)
    shuffled = got[-1]
    for k, j in enumerate(order):  # the reordered call's document k is document j of the first call
        assert abs(shuffled[k] - want[0][int(j)]) <= TEXT_TOL


# ---- the planner ------------------------------------------------------------------------------------------

def test_two_queries_in_one_batch_make_two_groups_and_a_lone_row_none() -> None:
    q1, q2 = [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 9, 9, 9, 9, 9, 9]
    rows = [Row(q1 + [20, 21]), Row(q2 + [22]), Row(q1 + [23, 24, 25]), Row(q2 + [26, 27]), Row([50, 51])]
    groups, rest = plan_groups(rows, pad_ids=set(), share=True)
    assert sorted((g.prefix, g.rows) for g in groups) == [(8, [0, 2]), (8, [1, 3])]
    assert rest == [4]
    assert plan_groups(rows, pad_ids=set(), share=False) == ([], list(range(5)))


def test_the_measured_rule_skips_a_short_prefix() -> None:
    rows = [Row([1, 2] + list(range(100 + 50 * i, 150 + 50 * i))) for i in range(4)]
    assert (3 * 2) / sum(len(r.ids) for r in rows) < SHARE_MIN_SAVING
    assert plan_groups(rows, pad_ids=set(), share=None)[0] == []
    assert len(plan_groups(rows, pad_ids=set(), share=True)[0]) == 1


def test_a_prefix_never_holds_a_window_the_rows_do_not_share() -> None:
    class Window:
        def __init__(self, key: str, n: int) -> None:
            self.key, self.num_tokens = key, n

    pad = 7
    a, b = Window("a", 3), Window("b", 3)
    rows = [Row([1, 2, pad, pad, pad, 4, 5], [a]), Row([1, 2, pad, pad, pad, 4, 6], [b])]
    (group,), _ = plan_groups(rows, pad_ids={pad}, share=True)
    assert (group.prefix, group.windows) == (2, 0)  # same pad ids, other images: cut before the pads
    rows = [Row([1, 2, pad, pad, pad, 4, 5], [a]), Row([1, 2, pad, pad, pad, 4, 6], [a])]
    (group,), _ = plan_groups(rows, pad_ids={pad}, share=True)
    assert (group.prefix, group.windows) == (6, 1)


def test_the_budget_counts_the_prefix_kv_once() -> None:
    """2B widths (28 layers, 8 kv heads, head_dim 128): a 1,300-token prefix holds 298 MB of float32 K/V
    (times SAFETY), however many documents share it; 8B widths (36 layers) 383 MB."""
    for layers, raw in ((28, 298_188_800), (36, 383_385_600)):
        b = MemoryBudget(budget=1 << 40, hidden=2048, heads=16, kv_heads=8, head_dim=128, intermediate=6144,
                         layers=layers)
        assert b.prefix_kv_bytes(1300) == pytest.approx(1.5 * raw, rel=1e-6)
        assert b.suffix_bytes(150, 1300) > b.row_bytes(150)


def test_a_prefix_that_does_not_fit_the_budget_runs_the_full_prompts() -> None:
    rr = model(TEXT_CKPT, True)
    call = dict(query="What is the capital of France?", documents=["Paris", "Berlin", "Rome"])
    want = by_index(model(TEXT_CKPT, False).rerank(**call))
    rows = rr._prepare(images=None, **call).rows
    need = max(rr.runner.budget.row_bytes(len(r.ids)) for r in rows)
    small = vlrank.Reranker(prefix_export(TEXT_CKPT), share_prefix=True, providers="cpu", memory_budget=need)
    small.runner.session = Recording(small.runner.session)
    got = by_index(small.rerank(**call))
    assert prefix_runs(small) == 0 and all(abs(got[i] - want[i]) <= TEXT_TOL for i in want)


# ---- through a real server ----------------------------------------------------------------------------------

def test_a_server_batch_shares_the_query_across_requests() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from vlrank.server import ServerSettings, create_app

    rr = vlrank.Reranker(prefix_export(TEXT_CKPT), share_prefix=True, providers="cpu", name="rr")
    rr.runner.session = Recording(rr.runner.session)
    server = LiveServer(create_app({"rr": rr}, settings=ServerSettings())).start()
    try:
        docs = ["Paris is the capital of France.", "Berlin is in Germany.", "The Seine flows through Paris."]
        bodies = [{"model": "rr", "query": "What is the capital of France?", "documents": docs[k:] + docs[:k]}
                  for k in range(3)]
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda b: httpx.post(server.url + "/v1/rerank", json=b, timeout=60), bodies))
    finally:
        server.stop()
    off = model(TEXT_CKPT, False)
    for body, answer in zip(bodies, answers):
        assert answer.status_code == 200, answer.text
        want = by_index(off.rerank(body["query"], body["documents"]))
        got = by_index(answer.json())
        assert all(abs(got[i] - want[i]) <= TEXT_TOL for i in want)
    assert prefix_runs(rr) >= 1 and prefix_runs(rr) <= 3  # one prefix per model batch, not per document


# ---- bad inputs and old directories -------------------------------------------------------------------------

def test_share_prefix_must_be_none_or_a_bool() -> None:
    for bad in ("yes", 1, 0.5):
        with pytest.raises(InvalidInputError) as err:
            vlrank.Reranker(prefix_export(TEXT_CKPT), share_prefix=bad, providers="cpu")
        assert err.value.field == "share_prefix" and "True" in str(err.value)


@pytest.mark.parametrize("kind", ["plain", "before-round-5"])
def test_an_old_directory_runs_full_prompts_and_refuses_true(tmp_path: Path, kind: str) -> None:
    """A plain export (no prefix inputs) and one whose manifest predates the field."""
    old = tmp_path / "old"
    export(TEXT_CKPT, old, task="rerank", prefix_kv=False, progress=False)
    if kind == "before-round-5":
        data = json.loads((old / MANIFEST).read_text())
        del data["decoder"]["prefix_kv"]
        (old / MANIFEST).write_text(json.dumps(data))
    assert read_manifest(old).prefix_kv is False
    with pytest.raises(ModelDirectoryError) as err:
        vlrank.Reranker(old, share_prefix=True, providers="cpu")
    assert err.value.field == "share_prefix" and "re-export" in str(err.value)
    rr = vlrank.Reranker(old, providers="cpu")  # None: the full prompts, the same scores
    rr.runner.session = Recording(rr.runner.session)
    call = dict(query="What is the capital of France?", documents=["Paris", "Berlin"])
    got, want = by_index(rr.rerank(**call)), by_index(model(TEXT_CKPT, True).rerank(**call))
    assert prefix_runs(rr) == 0 and all(abs(got[i] - want[i]) <= TEXT_TOL for i in want)
    from vlrank.cli.doctor import model_report

    assert model_report(str(old))["prefix_kv"] is False and "re-export" in model_report(str(old))["note"]
    assert model_report(str(prefix_export(TEXT_CKPT)))["prefix_kv"] is True


def test_the_manifest_records_prefix_reuse_and_the_plain_graph_is_unchanged(tmp_path: Path) -> None:
    assert read_manifest(prefix_export(TEXT_CKPT)).prefix_kv is True
    assert read_manifest(prefix_export(VL_CKPT)).prefix_kv is True
    assert read_manifest(exported(VL_CKPT, "rerank")).prefix_kv is True  # the default for rerank exports
    assert read_manifest(exported(VL_CKPT, "embed")).prefix_kv is False
    plain = export(VL_CKPT, tmp_path / "plain", task="rerank", prefix_kv=False, progress=False)
    assert read_manifest(plain).prefix_kv is False
    sess = model(TEXT_CKPT, False).runner.session
    names = [o.name for o in sess.get_outputs()]
    layers = (len(names) - 1) // 2
    assert set(names) == {"logits"} | {f"present_{k}.{i}" for k in ("key", "value") for i in range(layers)}
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask", "position_ids"]  # rest optional
    with pytest.raises(InvalidInputError) as err:
        export(VL_CKPT, tmp_path / "e", task="embed", prefix_kv=True, progress=False)
    assert err.value.field == "prefix_kv"
    with pytest.raises(InvalidInputError):
        export(TEXT_CKPT, tmp_path / "t", task="rerank", prefix_kv="yes", progress=False)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_prefix_graphs_are_valid_and_cuda_covers_every_op(precision: str) -> None:
    import onnx
    from test_attention_graphs import CUDA_KERNELS, _UNTYPED, typed_ops

    for ckpt in (TEXT_CKPT, VL_CKPT):
        graph = prefix_export(ckpt, precision) / "decoder.onnx"
        onnx.checker.check_model(str(graph))
        ops = typed_ops(graph)
        assert ("GroupQueryAttention", "com.microsoft", precision) in ops
        assert ("Expand", "ai.onnx", precision) in ops  # the prefix K/V, fed in the compute dtype
        missing = {o for o in ops if o not in CUDA_KERNELS and o[0] not in _UNTYPED}
        assert not missing, f"{ckpt.name} ({precision}): no CUDA kernel for {sorted(missing)}"
