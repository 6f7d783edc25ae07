"""NaN / inf outputs name their likely cause (issue 21): float16 overflow where the export is half precision,
damaged weights otherwise. A real float16-storage export whose weight overflows (CPU: float16 compute graphs need
CUDA, so that branch is checked through the message function the runner raises)."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import pytest
from export_support import TEXT_CKPT

import vlrank
from vlrank.engine.runner import non_finite_error
from vlrank.errors import RuntimeUnavailableError


def _overflowing_checkpoint(tmp_path: Path) -> Path:
    """The tiny text checkpoint with layer 0's MLP down projection at 99,840 (bfloat16 0x47C3): finite in bfloat16
    and float32, beyond float16's 65,504, so a float16 export stores it as inf (norms stay float32 in every
    export, so a norm would not do)."""
    ck = tmp_path / "big-norm-ckpt"
    shutil.copytree(TEXT_CKPT, ck)
    st_file = ck / "model.safetensors"
    raw = bytearray(st_file.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n])["model.layers.0.mlp.down_proj.weight"]
    assert meta["dtype"] == "BF16", meta
    begin, end = (8 + n + o for o in meta["data_offsets"])
    raw[begin:end] = b"\xc3\x47" * ((end - begin) // 2)
    st_file.write_bytes(bytes(raw))
    return ck


# The exporter's cast of the 99,840s to float16 is the overflow under test (numpy warns as it makes the infs).
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float16_storage_overflow_is_named_and_the_advice_works(tmp_path):
    ck = _overflowing_checkpoint(tmp_path)
    half = vlrank.Reranker(vlrank.export(ck, tmp_path / "f16", task="rerank", dtype="float16", progress=False))
    with pytest.raises(RuntimeUnavailableError) as err:
        half.rerank("q", ["a", "b"])
    message = str(err.value)
    assert err.value.field == "model"
    assert "non-finite" in message and "stored as float16" in message and "65504" in message, message
    assert "dtype='bfloat16'" in message and "re-export the model" not in message, message
    # What the message says to pass: the same checkpoint as bfloat16 storage scores, finite.
    bf16 = vlrank.Reranker(vlrank.export(ck, tmp_path / "bf16", task="rerank", dtype="bfloat16", progress=False))
    scores = [r["relevance_score"] for r in bf16.rerank("q", ["a", "b"])["results"]]
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores), scores


@pytest.mark.parametrize(("dtype", "precision", "says", "advice"), [
    ("float16", "float16", "with float16 compute", "precision='bfloat16'"),
    ("float16", "float32", "stored as float16", "dtype='bfloat16'"),
    ("bfloat16", "bfloat16", "may be corrupt", "re-export the model"),
    ("bfloat16", "float32", "may be corrupt", "re-export the model"),
    ("float32", "float32", "may be corrupt", "re-export the model"),
])
def test_the_cause_follows_the_exports_precision_and_storage(dtype, precision, says, advice):
    err = non_finite_error(dtype=dtype, precision=precision)
    assert isinstance(err, RuntimeUnavailableError) and err.field == "model"
    assert str(err).startswith("the model produced non-finite outputs (NaN/inf)")
    assert says in str(err) and advice in str(err), str(err)
    assert ("65504" in str(err)) == (dtype == "float16"), str(err)
