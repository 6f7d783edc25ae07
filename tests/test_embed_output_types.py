"""``Embedder.embed(..., output_type=...)``: one quantization scheme (vlrank.tasks.quantize_out), checked as
properties over arbitrary vectors and end to end on the tiny golden Qwen3-VL-Embedding export."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vlrank.errors import InvalidInputError
from vlrank.tasks.quantize_out import OUTPUT_TYPES, dequantize_int8, quantize

from server_fixtures import VL_EMBED, exported_models, library  # noqa: F401 - fixtures

finite = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, width=32)
vectors = st.integers(1, 96).flatmap(lambda n: arrays(np.float32, n, elements=finite))


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(np.bitwise_xor(a.view(np.uint8), b.view(np.uint8))).sum())


def sign_disagreements(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.sum((a > 0) != (b > 0)))


@settings(max_examples=200, deadline=None)
@given(vec=vectors, others=st.lists(vectors, min_size=1, max_size=6))
def test_binary_hamming_ranking_is_the_sign_pattern_ranking(vec, others):
    # Hamming distance between codes counts exactly the dimensions whose signs differ, so ranking by it is
    # ranking by sign disagreement (both the packed unsigned and the signed spelling).
    others = [np.resize(o, vec.shape) for o in others]
    for kind in ("ubinary", "binary"):
        code = quantize(vec, kind)
        assert code.dtype == (np.uint8 if kind == "ubinary" else np.int8)
        assert code.size == (vec.size + 7) // 8
        dists = [hamming(code, quantize(o, kind)) for o in others]
        assert dists == [sign_disagreements(vec, o) for o in others]
        assert sorted(range(len(others)), key=lambda i: (dists[i], i)) == \
            sorted(range(len(others)), key=lambda i: (sign_disagreements(vec, others[i]), i))


@settings(max_examples=200, deadline=None)
@given(vec=vectors)
def test_binary_bits_are_msb_first_and_signed_is_byte_minus_128(vec):
    ubin, sbin = quantize(vec, "ubinary"), quantize(vec, "binary")
    bits = np.unpackbits(ubin)[: vec.size]  # numpy's default bit order is big-endian (MSB first)
    assert bits.tolist() == (vec > 0).astype(np.uint8).tolist()
    assert (sbin.astype(np.int16) == ubin.astype(np.int16) - 128).all()


@settings(max_examples=300, deadline=None)
@given(vec=vectors)
def test_int8_round_trip_error_is_bounded(vec):
    peak = float(np.max(np.abs(vec)))
    q = quantize(vec, "int8")
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    err = np.abs(dequantize_int8(q, peak=peak) - vec.astype(np.float64))
    assert (err <= peak / 254 + 1e-6 * max(peak, 1e-30)).all()
    u = quantize(vec, "uint8")
    assert u.dtype == np.uint8 and (u.astype(np.int16) == q.astype(np.int16) + 128).all()
    if peak > 0:
        assert np.max(np.abs(q)) == 127  # the whole range is used


def test_int8_of_a_zero_vector_is_zero():
    assert quantize(np.zeros(16, np.float32), "int8").tolist() == [0] * 16


@pytest.mark.parametrize("kind", OUTPUT_TYPES)
def test_embed_output_type_is_the_float_vector_quantized(library, kind):
    embedder = library[VL_EMBED]
    texts = ["The food was delicious.", "A cat sleeps on a sofa."]
    floats = embedder.embed(texts, dimensions=24)
    got = embedder.embed(texts, dimensions=24, output_type=kind)
    assert got["usage"] == floats["usage"]
    for f, g in zip(floats["data"], got["data"]):
        want = quantize(np.asarray(f["embedding"], np.float32), kind)
        assert g["embedding"] == want.tolist() if kind != "float" else g["embedding"] == f["embedding"]
        assert all(isinstance(v, int if kind != "float" else float) for v in g["embedding"])
    b64 = embedder.embed(texts[:1], output_type=kind, encoding_format="base64")["data"][0]["embedding"]
    dtype = {"float": "<f4", "int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}[kind]
    ref = embedder.embed(texts[:1], output_type=kind)["data"][0]["embedding"]
    assert np.frombuffer(base64.b64decode(b64), dtype=dtype).tolist() == pytest.approx(ref, abs=0)


@pytest.mark.parametrize("bad", ["int4", "FLOAT", "", None, 8, ["int8"]])
def test_unknown_output_type_is_a_typed_error(library, bad):
    with pytest.raises(InvalidInputError) as err:
        library[VL_EMBED].embed("x", output_type=bad)
    assert err.value.field == "output_type" and "'ubinary'" in err.value.message
