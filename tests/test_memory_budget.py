"""The memory of a call is bounded by design (vlrank/engine/budget.py): batches are planned within
``memory_budget``, and a pair that cannot fit it is refused with MemoryBudgetError before any work."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

import vlrank
from export_support import TEXT_CKPT, VL_CKPT, exported
from vlrank.engine.budget import MemoryBudget, default_budget, physical_memory
from vlrank.errors import ContextTooLongError, InvalidInputError, MemoryBudgetError

QUERY = "what is the capital of france"


def _doc(words: int) -> str:
    return " ".join(["paris is the capital and the largest city of france"] * (words // 10))


@pytest.fixture(scope="module")
def text_model() -> Path:
    return exported(TEXT_CKPT, "rerank")


@pytest.fixture(scope="module")
def token_bytes(text_model: Path) -> int:
    return vlrank.Reranker(text_model, providers="cpu").runner.budget.token_bytes


def test_the_estimate_follows_the_model_widths() -> None:
    # Qwen3-VL-2B widths: the MLP phase (5 × 6144) outweighs attention (5 × (16 + 16) × 128).
    b = MemoryBudget(budget=1 << 30, hidden=2048, heads=16, kv_heads=8, head_dim=128, intermediate=6144,
                     deepstack=3)
    assert b.token_bytes == int(1.5 * 4 * (3 * 2048 + 5 * 6144))
    assert b.row_bytes(1000, 100) == 1000 * b.token_bytes + 100 * b.image_token_bytes
    assert b.batch_bytes([10, 30], [0, 0]) == 2 * 30 * b.token_bytes  # padded to the longest row
    assert b.max_tokens() == (1 << 30) // b.token_bytes
    assert physical_memory() > 0 and default_budget(0) >= 1 << 30


def test_default_budget_comes_from_the_machine(text_model: Path) -> None:
    rr = vlrank.Reranker(text_model, providers="cpu")
    assert rr.runner.memory_budget == default_budget(sum(p.stat().st_size for p in text_model.iterdir()))
    assert rr.runner.batch_tokens <= rr.runner.budget.max_tokens()


def test_a_pair_over_the_budget_is_refused_and_a_short_one_passes(text_model: Path, token_bytes: int) -> None:
    rr = vlrank.Reranker(text_model, providers="cpu", memory_budget=300 * token_bytes, max_length=4096)
    short = rr.rerank(QUERY, [_doc(100)])
    assert short["usage"]["prompt_tokens"] < 300 and 0 < short["results"][0]["relevance_score"] < 1
    with pytest.raises(MemoryBudgetError) as info:
        rr.rerank(QUERY, [_doc(100), _doc(1000)])
    err = info.value
    assert isinstance(err, ContextTooLongError) and isinstance(err, ValueError)
    assert err.field == "max_length"
    msg = str(err)
    assert "memory_budget" in msg and "shorter max_length" in msg and "300 tokens fits" in msg
    # ... and the max_length it names does fit.
    fits = vlrank.Reranker(text_model, providers="cpu", memory_budget=300 * token_bytes, max_length=300)
    assert fits.rerank(QUERY, [_doc(1000)])["usage"]["prompt_tokens"] == 300


def test_batched_equals_one_at_a_time_within_a_small_budget(text_model: Path, token_bytes: int) -> None:
    # Room for about two 100-token rows per decoder run: the plan splits six documents into several runs.
    rr = vlrank.Reranker(text_model, providers="cpu", memory_budget=250 * token_bytes)
    assert rr.runner.batch_tokens == 250
    docs = [_doc(n) for n in (20, 90, 40, 100, 60, 10)]
    together = {r["index"]: r["relevance_score"] for r in rr.rerank(QUERY, docs)["results"]}
    for i, d in enumerate(docs):
        assert together[i] == pytest.approx(rr.rerank(QUERY, [d])["results"][0]["relevance_score"], abs=1e-6)


def test_many_calls_keep_the_refusal_in_place(text_model: Path, token_bytes: int) -> None:
    rr = vlrank.Reranker(text_model, providers="cpu", memory_budget=300 * token_bytes, max_length=4096)
    out = rr.rerank_many([{"query": QUERY, "documents": [_doc(50)]},
                          {"query": QUERY, "documents": [_doc(1000)]},
                          {"query": QUERY, "documents": [_doc(30)]}])
    assert isinstance(out[1], MemoryBudgetError)
    assert out[0]["results"][0]["relevance_score"] == pytest.approx(
        rr.rerank(QUERY, [_doc(50)])["results"][0]["relevance_score"], abs=1e-6)
    assert len(out[2]["results"]) == 1


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "8GB"])
def test_memory_budget_must_be_bytes(text_model: Path, bad) -> None:
    with pytest.raises(InvalidInputError) as info:
        vlrank.Reranker(text_model, providers="cpu", memory_budget=bad)
    assert info.value.field == "memory_budget"


def test_an_image_pair_is_refused_before_any_pixel_is_decoded() -> None:
    model = exported(VL_CKPT, "rerank")
    rr = vlrank.Reranker(model, providers="cpu")
    budget = rr.runner.budget
    # A 512x512 PNG: 1,024 patches, 256 image tokens. Its header is intact, its pixel data is not, so
    # decoding it would raise ImageDecodeError; the budget check comes first and decodes nothing.
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (10, 200, 30)).save(buf, format="PNG")
    raw = buf.getvalue()
    broken = raw[:64] + bytes(len(raw) - 76) + raw[-12:]
    doc = {"content": [{"type": "image", "image": broken}, {"type": "text", "text": "a green square"}]}
    small = vlrank.Reranker(model, providers="cpu",
                            memory_budget=budget.vision_bytes(1024) + 100 * budget.token_bytes)
    with pytest.raises(MemoryBudgetError) as info:
        small.rerank("green?", [doc])
    assert "256 of them image tokens" in str(info.value) and "max_pixels" in str(info.value)
    with pytest.raises(vlrank.ImageDecodeError):
        rr.rerank("green?", [doc])
