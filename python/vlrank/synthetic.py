"""Random checkpoints of the real architectures, written with numpy alone.

Used by ``vlrank demo`` (an offline, clearly labelled tiny model running the real pipeline) and by the
benches (a checkpoint of a chosen size). The files are laid out exactly like released Hugging Face
checkpoints — ``config.json`` in the released format, bf16 ``model.safetensors`` with the released
tensor names, the real Qwen3 ``tokenizer.json`` — so ``vlrank.export`` treats them like the real thing.
The weights are random: scores from these models mean nothing.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlrank.qwen_vocab import write_qwen_tokenizer

QWEN_VOCAB_SIZE = 151936


@dataclass(frozen=True)
class TextShape:
    """Sizes of a Qwen3 text decoder."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    intermediate: int = 128
    vocab: int = QWEN_VOCAB_SIZE


@dataclass(frozen=True)
class VisionShape:
    """Sizes of a Qwen3-VL vision tower (patch 16, merge 2, temporal patch 2 as released)."""

    hidden: int = 64
    depth: int = 2
    heads: int = 2
    intermediate: int = 128
    num_position_embeddings: int = 64
    deepstack_layers: tuple[int, ...] = (0,)
    patch: int = 16
    merge: int = 2
    temporal: int = 2


def _to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round-to-nearest-even (what torch's .to(bfloat16) does)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def write_safetensors_bf16(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write float32 arrays as a bf16 safetensors file (numpy has no bf16 dtype, so by hand)."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        blob = _to_bf16_bits(tensors[name]).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data start to 8 bytes
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for blob in blobs:
            out.write(blob)


@dataclass
class _Weights:
    rng: np.random.Generator
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def normal(self, name: str, *shape: int, scale: float = 0.05) -> None:
        self.tensors[name] = (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def norm(self, name: str, size: int) -> None:
        self.tensors[name] = (1.0 + self.rng.standard_normal(size) * 0.1).astype(np.float32)

    def bias(self, name: str, size: int) -> None:
        self.tensors[name] = (self.rng.standard_normal(size) * 0.02).astype(np.float32)


def _text_decoder(w: _Weights, prefix: str, shape: TextShape) -> None:
    w.normal(f"{prefix}.embed_tokens.weight", shape.vocab, shape.hidden, scale=0.5)
    for i in range(shape.layers):
        p = f"{prefix}.layers.{i}"
        w.norm(f"{p}.input_layernorm.weight", shape.hidden)
        w.norm(f"{p}.post_attention_layernorm.weight", shape.hidden)
        w.normal(f"{p}.self_attn.q_proj.weight", shape.heads * shape.head_dim, shape.hidden)
        w.normal(f"{p}.self_attn.k_proj.weight", shape.kv_heads * shape.head_dim, shape.hidden)
        w.normal(f"{p}.self_attn.v_proj.weight", shape.kv_heads * shape.head_dim, shape.hidden)
        w.normal(f"{p}.self_attn.o_proj.weight", shape.hidden, shape.heads * shape.head_dim)
        w.norm(f"{p}.self_attn.q_norm.weight", shape.head_dim)
        w.norm(f"{p}.self_attn.k_norm.weight", shape.head_dim)
        w.normal(f"{p}.mlp.gate_proj.weight", shape.intermediate, shape.hidden)
        w.normal(f"{p}.mlp.up_proj.weight", shape.intermediate, shape.hidden)
        w.normal(f"{p}.mlp.down_proj.weight", shape.hidden, shape.intermediate)
    w.norm(f"{prefix}.norm.weight", shape.hidden)


def _text_config(shape: TextShape) -> dict:
    return {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate,
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": 1e-06,
        "vocab_size": shape.vocab,
    }


def write_random_qwen3(out_dir: Path, *, shape: TextShape = TextShape(), seed: int = 0,
                       tokenizer_json: Path | None = None) -> Path:
    """A random ``Qwen3ForCausalLM`` checkpoint (the text Qwen3-Reranker architecture)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    w = _Weights(np.random.default_rng(seed))
    _text_decoder(w, "model", shape)
    w.normal("lm_head.weight", shape.vocab, shape.hidden)
    config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", **_text_config(shape),
              "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rope_scaling": None,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    return _finish(out_dir, config, w, tokenizer_json)


def write_random_qwen3_vl(out_dir: Path, *, text: TextShape = TextShape(), vision: VisionShape = VisionShape(),
                          seed: int = 0, tokenizer_json: Path | None = None) -> Path:
    """A random ``Qwen3VLForConditionalGeneration`` checkpoint (Qwen3-VL-Reranker / -Embedding)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if text.head_dim % 2 or sum(_mrope_section(text.head_dim)) * 2 != text.head_dim:
        raise ValueError("text.head_dim must be even and split into M-RoPE sections")
    w = _Weights(np.random.default_rng(seed))
    _text_decoder(w, "model.language_model", text)
    v, p = vision, "model.visual"
    w.normal(f"{p}.patch_embed.proj.weight", v.hidden, 3, v.temporal, v.patch, v.patch, scale=0.02)
    w.bias(f"{p}.patch_embed.proj.bias", v.hidden)
    w.normal(f"{p}.pos_embed.weight", v.num_position_embeddings, v.hidden, scale=0.5)
    for i in range(v.depth):
        b = f"{p}.blocks.{i}"
        for n in ("norm1", "norm2"):
            w.norm(f"{b}.{n}.weight", v.hidden)
            w.bias(f"{b}.{n}.bias", v.hidden)
        w.normal(f"{b}.attn.qkv.weight", 3 * v.hidden, v.hidden)
        w.bias(f"{b}.attn.qkv.bias", 3 * v.hidden)
        w.normal(f"{b}.attn.proj.weight", v.hidden, v.hidden)
        w.bias(f"{b}.attn.proj.bias", v.hidden)
        w.normal(f"{b}.mlp.linear_fc1.weight", v.intermediate, v.hidden)
        w.bias(f"{b}.mlp.linear_fc1.bias", v.intermediate)
        w.normal(f"{b}.mlp.linear_fc2.weight", v.hidden, v.intermediate)
        w.bias(f"{b}.mlp.linear_fc2.bias", v.hidden)
    merged = v.hidden * v.merge * v.merge
    # The main merger normalises before the 2x2 shuffle (hidden-wide norm); the DeepStack mergers after
    # it (merged-wide norm), as in the released checkpoints.
    for m, norm_size in [("merger", v.hidden)] + [(f"deepstack_merger_list.{k}", merged)
                                                   for k in range(len(v.deepstack_layers))]:
        w.norm(f"{p}.{m}.norm.weight", norm_size)
        w.bias(f"{p}.{m}.norm.bias", norm_size)
        w.normal(f"{p}.{m}.linear_fc1.weight", merged, merged)
        w.bias(f"{p}.{m}.linear_fc1.bias", merged)
        w.normal(f"{p}.{m}.linear_fc2.weight", text.hidden, merged)
        w.bias(f"{p}.{m}.linear_fc2.bias", text.hidden)
    config = {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "text_config": {
            **_text_config(text), "model_type": "qwen3_vl_text", "max_position_embeddings": 262144,
            "tie_word_embeddings": True, "rope_theta": 5000000.0,
            "rope_scaling": {"mrope_interleaved": True, "mrope_section": _mrope_section(text.head_dim),
                             "rope_type": "default"},
        },
        "vision_config": {
            "model_type": "qwen3_vl_vision", "depth": v.depth, "hidden_size": v.hidden,
            "hidden_act": "gelu_pytorch_tanh", "intermediate_size": v.intermediate, "num_heads": v.heads,
            "in_channels": 3, "patch_size": v.patch, "spatial_merge_size": v.merge,
            "temporal_patch_size": v.temporal, "out_hidden_size": text.hidden,
            "num_position_embeddings": v.num_position_embeddings,
            "deepstack_visual_indexes": list(v.deepstack_layers), "initializer_range": 0.02,
        },
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessorFast", "patch_size": v.patch,
        "temporal_patch_size": v.temporal, "merge_size": v.merge, "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3, "size": {"shortest_edge": 65536, "longest_edge": 16777216},
        "processor_class": "Qwen3VLProcessor"}, indent=1))
    return _finish(out_dir, config, w, tokenizer_json)


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (t, h, w) like the released [24, 20, 20] of 128."""
    half = head_dim // 2
    h = w = (half * 20) // 64
    return [half - h - w, h, w]


def _finish(out_dir: Path, config: dict, w: _Weights, tokenizer_json: Path | None) -> Path:
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_safetensors_bf16(out_dir / "model.safetensors", w.tensors)
    # As released: transformers' AutoTokenizer needs tokenizer_config.json beside tokenizer.json.
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 262144, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "padding_side": "left", "tokenizer_class": "Qwen2Tokenizer"}, indent=1))
    target = out_dir / "tokenizer.json"
    if tokenizer_json is not None:
        target.write_bytes(Path(tokenizer_json).read_bytes())
    else:
        write_qwen_tokenizer(target)
    return out_dir
