"""smart_resize / image_tokens against the golden cases, the SPEC examples, a plain-Python statement
of the reference rule (hypothesis), and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vlrank
from images_support import reference_smart_resize
from vlrank import InvalidInputError

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = json.loads((GOLDEN / "cases" / "geometry.json").read_text())

def test_golden_cases_cover_all_budgets():
    assert len(CASES) >= 600
    assert {(c["min_pixels"], c["max_pixels"]) for c in CASES} == {
        (4096, 1310720), (4096, 1843200), (65536, 16777216), (262144, 524288)}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['height']}x{c['width']}-{c['min_pixels']}-{c['max_pixels']}")
def test_golden_geometry(case):
    kw = dict(height=case["height"], width=case["width"], min_pixels=case["min_pixels"], max_pixels=case["max_pixels"])
    if "error" in case:
        with pytest.raises(InvalidInputError) as exc:
            vlrank.smart_resize(**kw)
        assert "aspect ratio" in str(exc.value)
        with pytest.raises(InvalidInputError):
            vlrank.image_tokens(**kw)
        return
    got = vlrank.smart_resize(**kw)
    assert (got.height, got.width) == (case["resized_height"], case["resized_width"])
    assert got == (case["resized_height"], case["resized_width"])  # a NamedTuple is a tuple
    assert vlrank.image_tokens(**kw) == case["tokens"]


def test_spec_examples():
    assert vlrank.smart_resize(height=1936, width=1296, min_pixels=4096, max_pixels=1310720) == (1376, 928)
    assert vlrank.image_tokens(width=1296, height=1936) == 1247


def test_half_to_even_rounding():
    # 80 / 32 = 2.5 rounds to 2 (Python's round), so 80x80 -> 64x64, not 96x96
    assert vlrank.smart_resize(height=80, width=80) == (64, 64)
    assert vlrank.smart_resize(height=112, width=112) == (128, 128)


def test_defaults_are_the_hosted_budget():
    # 1,280 tokens is the hosted maximum: a huge image lands at or under it
    assert vlrank.image_tokens(width=8000, height=6000) <= 1280
    assert vlrank.image_tokens(width=8000, height=6000, max_pixels=1843200) > 1280


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(height=0, width=10), "height"),
        (dict(height=10, width=0), "width"),
        (dict(height=-5, width=10), "height"),
        (dict(height=10.5, width=10), "height"),
        (dict(height=1, width=201), "image"),
        (dict(height=30000, width=100), "image"),
        (dict(height=100, width=100, min_pixels=8192, max_pixels=4096), "min_pixels"),
        (dict(height=100, width=100, min_pixels=0), "min_pixels"),
        (dict(height=100, width=100, max_pixels=-1), "max_pixels"),
        # thin image with a tiny budget: the reference would resize a side to 0
        (dict(height=100, width=10000, min_pixels=4096, max_pixels=4096), "max_pixels"),
    ],
)
def test_errors_name_the_field(kw, field):
    with pytest.raises(InvalidInputError) as exc:
        vlrank.smart_resize(**kw)
    assert exc.value.field == field
    assert isinstance(exc.value, ValueError)
    assert "pass" in str(exc.value) or "must be" in str(exc.value) or "crop" in str(exc.value)


def test_keyword_only():
    with pytest.raises(TypeError):
        vlrank.smart_resize(100, 100)  # type: ignore[misc]


sizes = st.integers(min_value=1, max_value=50_000)
budgets = st.tuples(st.integers(min_value=1, max_value=1 << 24), st.integers(min_value=1, max_value=1 << 26)).map(
    lambda t: (min(t), max(t))
)


@settings(max_examples=400, deadline=None)
@given(h=sizes, w=sizes, budget=budgets)
def test_matches_reference_rule(h, w, budget):
    mn, mx = budget
    try:
        want = reference_smart_resize(h, w, 32, mn, mx)
    except ValueError:
        with pytest.raises(InvalidInputError):
            vlrank.smart_resize(height=h, width=w, min_pixels=mn, max_pixels=mx)
        return
    if want[0] <= 0 or want[1] <= 0:  # the reference cannot resize to a zero side; we say so up front
        with pytest.raises(InvalidInputError) as exc:
            vlrank.smart_resize(height=h, width=w, min_pixels=mn, max_pixels=mx)
        assert exc.value.field == "max_pixels"
        return
    got = vlrank.smart_resize(height=h, width=w, min_pixels=mn, max_pixels=mx)
    assert got == want
    assert got.height % 32 == 0 and got.width % 32 == 0
    assert vlrank.image_tokens(width=w, height=h, min_pixels=mn, max_pixels=mx) == (want[0] // 32) * (want[1] // 32)


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 20_000), w=st.integers(1, 20_000))
def test_default_budget_outputs(h, w):
    if max(h, w) / min(h, w) > 200:
        with pytest.raises(InvalidInputError):
            vlrank.smart_resize(height=h, width=w)
        return
    rh, rw = vlrank.smart_resize(height=h, width=w)
    assert rh % 32 == 0 and rw % 32 == 0 and rh >= 32 and rw >= 32
    assert rh * rw <= 1310720
    assert rh * rw >= 4096
