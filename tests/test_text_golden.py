"""The exported decoder graphs reproduce every text-only golden case from its golden token ids.

VL rerank: score = sigmoid(logit), |Δ| ≤ 1e-4 (the logit is checked too). Text rerank: P(yes) =
softmax([no, yes])[1], |Δ| ≤ 1e-4. VL embed: cosine ≥ 0.99999 and the MRL-8 prefix re-normalised.
Plus the one image case whose decoder inputs the reference dumped (vl_intermediates.npz): the decoder
with the reference's merger / DeepStack features reproduces its logit.
"""

from __future__ import annotations

import numpy as np
import pytest
from export_support import (
    GOLDEN,
    IMAGE_PAD,
    TEXT_CKPT,
    VL_CKPT,
    cases,
    embed_prompt,
    encode_prompt,
    exported,
    run_rows,
    session,
    sigmoid,
    softmax_yes,
)

TEXT_RERANK = cases("text_rerank.json")
VL_RERANK = cases("vl_rerank.json")
VL_EMBED = cases("vl_embed.json")


def _text_only_vl_results():
    for ci, case in enumerate(VL_RERANK):
        for di, r in enumerate(case["results"]):
            if IMAGE_PAD not in r["input_ids"]:
                yield pytest.param(r, id=f"case{ci}-doc{di}")


@pytest.mark.parametrize("ci", range(len(TEXT_RERANK)))
def test_text_rerank_golden(ci: int) -> None:
    sess = session(exported(TEXT_CKPT, "rerank"))
    for r in TEXT_RERANK[ci]["results"]:
        logits = run_rows(sess, [(r["input_ids"], None)], "logits")
        assert logits.shape == (1, 2)
        assert abs(softmax_yes(logits)[0] - r["score"]) <= 1e-4


@pytest.mark.parametrize("r", list(_text_only_vl_results()))
def test_vl_rerank_golden_text_only(r: dict) -> None:
    sess = session(exported(VL_CKPT, "rerank"))
    logit = run_rows(sess, [(r["input_ids"], r["position_ids"])], "logit")
    assert logit.shape == (1,)
    assert abs(float(logit[0]) - r["logit"]) <= 1e-4
    assert abs(sigmoid(float(logit[0])) - r["score"]) <= 1e-4


def test_vl_rerank_batch_matches_single_and_golden() -> None:
    """All text-only pairs in one right-padded batch: each score equals its one-at-a-time score."""
    sess = session(exported(VL_CKPT, "rerank"))
    rows = [p.values[0] for p in _text_only_vl_results()]
    batch = run_rows(sess, [(r["input_ids"], r["position_ids"]) for r in rows], "logit", extra_pad=5)
    for r, got in zip(rows, batch):
        single = run_rows(sess, [(r["input_ids"], r["position_ids"])], "logit")[0]
        assert abs(float(got) - float(single)) <= 1e-5
        assert abs(float(got) - r["logit"]) <= 1e-4


def test_text_rerank_batch_matches_single() -> None:
    sess = session(exported(TEXT_CKPT, "rerank"))
    rows = [r for case in TEXT_RERANK for r in case["results"]]
    batch = softmax_yes(run_rows(sess, [(r["input_ids"], None) for r in rows], "logits", extra_pad=3))
    for r, got in zip(rows, batch):
        single = softmax_yes(run_rows(sess, [(r["input_ids"], None)], "logits"))[0]
        assert abs(got - single) <= 1e-5
        assert abs(got - r["score"]) <= 1e-4


def _text_only_embed_cases():
    for i, case in enumerate(VL_EMBED):
        if not case["input"].get("images"):
            yield pytest.param(case, id=f"case{i}")


@pytest.mark.parametrize("case", list(_text_only_embed_cases()))
def test_vl_embed_golden_text_only(case: dict) -> None:
    model = exported(VL_CKPT, "embed")
    ids = encode_prompt(embed_prompt(case["instruction"], case["input"].get("texts", [])),
                        model / "tokenizer.json")
    assert len(ids) == case["prompt_tokens"]
    emb = run_rows(session(model), [(ids, None)], "embedding")[0].astype(np.float64)
    ref = np.asarray(case["embedding"], dtype=np.float64)
    assert emb.shape == ref.shape
    assert abs(np.linalg.norm(emb) - 1.0) <= 1e-5
    assert float(emb @ ref / np.linalg.norm(ref)) >= 0.99999
    dim8 = emb[:8] / np.linalg.norm(emb[:8])
    np.testing.assert_allclose(dim8, case["embedding_dim8"], atol=1e-4)


def test_image_case_from_reference_features() -> None:
    """Image-pad scatter + DeepStack injection: the reference's own vision outputs in, its logit out."""
    z = np.load(GOLDEN / "cases" / "vl_intermediates.npz")
    sess = session(exported(VL_CKPT, "rerank"))
    ids = z["input_ids"].astype(np.int64)[None]
    k = sum(1 for name in z.files if name.startswith("vision.deepstack"))
    deepstack = np.stack([z[f"vision.deepstack{i}"] for i in range(k)]).astype(np.float32)
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": z["position_ids"].astype(np.int64)[:, None, :],
        "image_embeds": z["vision.merger"].astype(np.float32),
        "deepstack_embeds": deepstack,
    }
    logit = sess.run(["logit"], feeds)[0]
    assert abs(float(logit[0]) - float(z["score_logit"][0])) <= 1e-4

    # The same pair next to a text-only row (image rows come first in row-major order) and padded.
    text = next(p.values[0] for p in _text_only_vl_results())
    L = max(ids.shape[1], len(text["input_ids"])) + 4
    batch_ids = np.full((2, L), 151643, np.int64)
    mask = np.zeros((2, L), np.int64)
    pos = np.zeros((3, 2, L), np.int64)
    for b, (row, p) in enumerate([(text["input_ids"], text["position_ids"]), (z["input_ids"], z["position_ids"])]):
        batch_ids[b, : len(row)] = row
        mask[b, : len(row)] = 1
        pos[:, b, : len(row)] = p
    feeds.update(input_ids=batch_ids, attention_mask=mask, position_ids=pos)
    both = sess.run(["logit"], feeds)[0]
    assert abs(float(both[1]) - float(logit[0])) <= 1e-5
    assert abs(float(both[0]) - text["logit"]) <= 1e-4
