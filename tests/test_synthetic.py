"""The offline Qwen vocabulary and the random checkpoints used by the demo and the benches must be
the real thing: the same tokenizer document as the reference's, the same tensor names and shapes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from vlrank.qwen_vocab import build_qwen_tokenizer_json
from vlrank.synthetic import TextShape, VisionShape, _to_bf16_bits, write_random_qwen3, write_random_qwen3_vl


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    header.pop("__metadata__", None)
    return {name: meta["shape"] for name, meta in header.items()}


def test_offline_vocabulary_equals_reference_tokenizer(golden_dir: Path) -> None:
    ours = build_qwen_tokenizer_json()
    reference = json.loads((golden_dir / "models" / "tokenizer.json").read_text())
    assert ours["model"]["vocab"] == reference["model"]["vocab"]
    assert ours["model"]["merges"] == reference["model"]["merges"]
    assert ours["added_tokens"] == reference["added_tokens"]
    assert ours["pre_tokenizer"] == reference["pre_tokenizer"]
    assert ours["normalizer"] == reference["normalizer"]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3"])
def test_random_checkpoint_has_the_released_layout(tmp_path: Path, golden_dir: Path, family: str) -> None:
    tokenizer = golden_dir / "models" / "tokenizer.json"
    if family == "qwen3_vl":
        out = write_random_qwen3_vl(
            tmp_path / "vl",
            text=TextShape(hidden=32, layers=3, heads=4, kv_heads=2, head_dim=16, intermediate=64),
            vision=VisionShape(hidden=32, depth=3, intermediate=64, deepstack_layers=(0, 2)),
            tokenizer_json=tokenizer,
        )
        reference = golden_dir / "models" / "tiny-qwen3-vl"
    else:
        out = write_random_qwen3(
            tmp_path / "text",
            shape=TextShape(hidden=16, layers=3, heads=4, kv_heads=2, head_dim=16, intermediate=32),
            tokenizer_json=tokenizer,
        )
        reference = golden_dir / "models" / "tiny-qwen3-text"
    assert _safetensors_shapes(out / "model.safetensors") == _safetensors_shapes(reference / "model.safetensors")
    ours = json.loads((out / "config.json").read_text())
    theirs = json.loads((reference / "config.json").read_text())
    assert ours["architectures"] == theirs["architectures"]


def test_bf16_rounding_is_round_to_nearest_even() -> None:
    values = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.0e-3], dtype=np.float32)
    bits = _to_bf16_bits(values)
    back = (bits.astype(np.uint32) << 16).view(np.float32)
    # 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa wins (1.0); 1 + 3*2^-8 rounds up.
    assert back.tolist()[:4] == [1.0, 1.0, 1.015625, -2.5]
    assert abs(back[4] - values[4]) <= abs(values[4]) * 2**-8
