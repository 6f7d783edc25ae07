"""Batch planning and right padding (vlrank._native.plan_batches / pad_batch)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlrank import _native
from vlrank.errors import InvalidInputError


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 3000), max_size=60),
    max_batch_size=st.integers(1, 16),
    token_budget=st.integers(1, 20000),
)
def test_plan_properties(lengths: list[int], max_batch_size: int, token_budget: int) -> None:
    plan = _native.plan_batches(lengths, max_batch_size=max_batch_size, token_budget=token_budget)
    order = [int(i) for b in plan for i in b]
    assert sorted(order) == list(range(len(lengths)))  # every index exactly once
    # longest first; ties keep input order (stable)
    assert order == sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for b in plan:
        assert b.dtype == np.int64 and 1 <= len(b) <= max_batch_size
        longest = max(max(lengths[i], 1) for i in b)
        # budget respected; a lone sequence longer than the budget is the only exception
        assert len(b) * longest <= token_budget or len(b) == 1
    # greedy: a batch only ends when the next sequence would break a limit
    for b, nxt in zip(plan, plan[1:]):
        longest = max(max(lengths[i], 1) for i in b)
        assert len(b) == max_batch_size or (len(b) + 1) * longest > token_budget


def test_plan_examples() -> None:
    plan = _native.plan_batches([10, 30, 20, 30], max_batch_size=8, token_budget=60)
    assert [b.tolist() for b in plan] == [[1, 3], [2, 0]]
    assert _native.plan_batches([], max_batch_size=4, token_budget=100) == []
    with pytest.raises(InvalidInputError) as e:
        _native.plan_batches([1], max_batch_size=0, token_budget=10)
    assert e.value.field == "max_batch_size"
    with pytest.raises(InvalidInputError) as e:
        _native.plan_batches([1, -2], max_batch_size=1, token_budget=10)
    assert e.value.field == "lengths[1]"


@settings(max_examples=100, deadline=None)
@given(
    seqs=st.lists(st.lists(st.integers(0, 151_000), max_size=30), min_size=1, max_size=8),
    pad_id=st.integers(0, 151_643),
    min_width=st.integers(0, 40),
)
def test_padding_layout(seqs: list[list[int]], pad_id: int, min_width: int) -> None:
    positions = [np.arange(3 * len(s), dtype=np.int64).reshape(3, len(s)) + 7 for s in seqs]
    ids, mask, pos = _native.pad_batch(seqs, pad_id=pad_id, positions=positions, pad_position=1, min_width=min_width)
    width = max(max(len(s) for s in seqs), min_width)
    assert ids.shape == mask.shape == (len(seqs), width) and ids.dtype == mask.dtype == np.int64
    assert pos is not None and pos.shape == (3, len(seqs), width) and pos.dtype == np.int64
    for r, s in enumerate(seqs):
        n = len(s)
        assert ids[r, :n].tolist() == s and (ids[r, n:] == pad_id).all()
        assert (mask[r, :n] == 1).all() and (mask[r, n:] == 0).all()
        assert (pos[:, r, :n] == positions[r]).all() and (pos[:, r, n:] == 1).all()


def test_padding_without_positions_and_errors() -> None:
    ids, mask, pos = _native.pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]] and pos is None
    with pytest.raises(InvalidInputError) as e:
        _native.pad_batch([[1, 2]], pad_id=0, positions=[np.zeros((3, 3), dtype=np.int64)])
    assert e.value.field == "positions[0]"
    with pytest.raises(InvalidInputError) as e:
        _native.pad_batch([[1, 2]], pad_id=0, positions=[np.zeros((2, 2), dtype=np.int64)])
    assert e.value.field == "positions[0]"
    with pytest.raises(InvalidInputError) as e:
        _native.pad_batch([[1], [2]], pad_id=0, positions=[np.zeros((3, 1), dtype=np.int64)])
    assert e.value.field == "positions"
