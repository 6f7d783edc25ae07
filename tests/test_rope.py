"""rope.rs through vlrank._native: M-RoPE position ids, vision rotary tables and the learned
position-embedding interpolation, against the reference (golden vl_rerank.json, vl_intermediates.npz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlrank import _native
from vlrank.errors import InvalidInputError

GOLDEN = Path(__file__).resolve().parent / "golden"
IMAGE_PAD = 151655


def _merged_grid(image: str, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The reference's merged grid of a golden image, from pixels.json (independent of our preprocess)."""
    for case in json.loads((GOLDEN / "cases" / "pixels.json").read_text()):
        if case["image"] == image and case["min_pixels"] == min_pixels and case["max_pixels"] == max_pixels:
            _, h, w = case["grid_thw"]
            return h // 2, w // 2
    raise AssertionError(f"no pixels.json case for {image}")


def _rerank_pairs():
    for ci, case in enumerate(json.loads((GOLDEN / "cases" / "vl_rerank.json").read_text())):
        for di, (doc, res) in enumerate(zip(case["documents"], case["results"])):
            images = case["query"].get("images", []) + doc.get("images", [])
            grids = [_merged_grid(im, case["min_pixels"], case["max_pixels"]) for im in images]
            yield pytest.param(res["input_ids"], grids, res["position_ids"], id=f"case{ci}-doc{di}")


@pytest.mark.parametrize(("input_ids", "grids", "expected"), list(_rerank_pairs()))
def test_position_ids_match_every_golden_rerank_pair(input_ids, grids, expected):
    got = _native.mrope_position_ids(input_ids, image_pad_id=IMAGE_PAD, image_grids=grids)
    assert got.dtype == np.int64
    assert got.shape == (3, len(input_ids))
    np.testing.assert_array_equal(got, np.asarray(expected))


def test_position_ids_accept_numpy_ids():
    z = np.load(GOLDEN / "cases" / "vl_intermediates.npz")
    got = _native.mrope_position_ids(z["input_ids"], image_pad_id=IMAGE_PAD, image_grids=[(3, 4)])
    np.testing.assert_array_equal(got, z["position_ids"])


def test_batch_positions_equal_per_row_and_pad_with_one():
    pairs = list(_rerank_pairs())
    rows = [p.values for p in pairs[-4:]]  # the image pairs of the last case
    width = max(len(ids) for ids, _, _ in rows) + 3
    batch = np.zeros((len(rows), width), np.int64)
    for b, (ids, _, _) in enumerate(rows):
        batch[b, : len(ids)] = ids
    got = _native.mrope_position_ids_batch(
        batch, lengths=[len(r[0]) for r in rows], image_pad_id=IMAGE_PAD, image_grids=[r[1] for r in rows]
    )
    assert got.shape == (3, len(rows), width)
    for b, (ids, _, expected) in enumerate(rows):
        np.testing.assert_array_equal(got[:, b, : len(ids)], np.asarray(expected))
        assert (got[:, b, len(ids) :] == 1).all()


# ---- vision tables vs the reference's intermediates ------------------------------------------------------
@pytest.fixture(scope="module")
def npz():
    return np.load(GOLDEN / "cases" / "vl_intermediates.npz")


def test_vision_position_ids(npz):
    _, h, w = npz["grid_thw"][0]
    np.testing.assert_array_equal(_native.vision_position_ids(int(h), int(w), merge_size=2), npz["vision.position_ids"])


def test_interpolation_indices_and_weights_exact(npz):
    _, h, w = npz["grid_thw"][0]
    idx, wts = _native.pos_embed_interpolation(int(h), int(w), num_grid_per_side=8, merge_size=2)
    assert idx.dtype == np.int64 and wts.dtype == np.float32
    np.testing.assert_array_equal(idx, npz["vision.interp_indices"])
    np.testing.assert_array_equal(wts, npz["vision.interp_weights"])


def test_rotary_tables_within_one_ulp(npz):
    # The angles are bit-identical float32 products; cos/sin are the correctly rounded float32 values.
    # torch's own float32 cos/sin (SLEEF in vector lanes, libm in the tail) is within 1 ulp of those and
    # not even position-independent, so exactness is neither possible nor meaningful: 1 ulp is the bar.
    _, h, w = npz["grid_thw"][0]
    cos, sin = _native.vision_rotary(int(h), int(w), head_dim=16, merge_size=2, theta=10000.0)
    assert cos.shape == sin.shape == npz["vision.rotary_cos"].shape
    for got, ref in ((cos, npz["vision.rotary_cos"]), (sin, npz["vision.rotary_sin"])):
        ulp = np.spacing(np.abs(ref).astype(np.float32))
        assert (np.abs(got - ref) <= ulp).all()


# ---- properties ---------------------------------------------------------------------------------------------
_block = st.one_of(
    st.lists(st.integers(0, 151000), min_size=1, max_size=6).map(lambda t: ("text", t)),
    st.tuples(st.integers(1, 6), st.integers(1, 6)).map(lambda g: ("image", g)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_block, max_size=8))
def test_block_structure_property(blocks):
    ids: list[int] = []
    grids = []
    spans = []  # (kind, start, length, grid)
    for kind, value in blocks:
        if kind == "text":
            spans.append(("text", len(ids), len(value), None))
            ids.extend(value)
        else:
            rows, cols = value
            spans.append(("image", len(ids), rows * cols, value))
            grids.append(value)
            ids.extend([IMAGE_PAD] * (rows * cols))
    pos = _native.mrope_position_ids(ids, image_pad_id=IMAGE_PAD, image_grids=grids)
    assert pos.shape == (3, len(ids))
    running = 0
    for kind, start, length, grid in spans:
        seg = pos[:, start : start + length]
        if kind == "text":
            expected = np.arange(running, running + length)
            for axis in range(3):  # text: t = h = w = running position, strictly increasing by 1
                np.testing.assert_array_equal(seg[axis], expected)
            running += length
        else:
            rows, cols = grid
            assert (seg[0] == running).all()
            np.testing.assert_array_equal(seg[1].reshape(rows, cols), running + np.arange(rows)[:, None] + 0 * np.arange(cols))
            np.testing.assert_array_equal(seg[2].reshape(rows, cols), running + np.arange(cols)[None, :] + 0 * np.arange(rows)[:, None])
            running += max(rows, cols)
    # the t row never decreases; the next free position is the running one
    assert (np.diff(pos[0]) >= 0).all()
    if ids:
        assert pos.max() + 1 == running


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.sampled_from([4, 8, 48]))
def test_vision_tables_properties(bh, bw, side):
    h, w = 2 * bh, 2 * bw
    n = h * w
    pos = _native.vision_position_ids(h, w, merge_size=2)
    # every patch exactly once; each 2x2 merge block is 4 consecutive rows
    assert sorted(map(tuple, pos.tolist())) == [(r, c) for r in range(h) for c in range(w)]
    blocks = pos.reshape(n // 4, 4, 2) // 2
    assert (blocks == blocks[:, :1]).all()
    idx, wts = _native.pos_embed_interpolation(h, w, num_grid_per_side=side, merge_size=2)
    assert idx.shape == wts.shape == (n, 4)
    assert idx.min() >= 0 and idx.max() < side * side
    assert (wts >= 0).all()
    np.testing.assert_allclose(wts.sum(1), 1.0, atol=1e-6)
    cos, sin = _native.vision_rotary(h, w, head_dim=16)
    np.testing.assert_allclose(cos**2 + sin**2, 1.0, atol=1e-6)
    np.testing.assert_array_equal(cos[:, :8], cos[:, 8:])


# ---- errors --------------------------------------------------------------------------------------------------
def test_pad_count_mismatch_is_a_typed_error():
    with pytest.raises(InvalidInputError) as info:
        _native.mrope_position_ids([1, IMAGE_PAD, IMAGE_PAD, 2], image_pad_id=IMAGE_PAD, image_grids=[(1, 1)])
    assert info.value.field == "image_grids"
    assert "2 image-pad tokens" in str(info.value)


def test_odd_patch_grid_is_a_typed_error():
    with pytest.raises(InvalidInputError) as info:
        _native.vision_rotary(3, 4, head_dim=16)
    assert info.value.field == "grid_thw"


def test_batch_length_mismatch_is_a_typed_error():
    with pytest.raises(InvalidInputError) as info:
        _native.mrope_position_ids_batch(np.zeros((2, 4), np.int64), lengths=[4], image_pad_id=IMAGE_PAD,
                                         image_grids=[[], []])
    assert info.value.field == "lengths"
