"""``vlrank.json``: what an export writes (the format; read back by ``vlrank.engine.manifest``).

Fields (format 1):
  format, vlrank_version
  name                 model name reported in API responses (checkpoint directory name or hub id)
  family               "qwen3" (text Qwen3-Reranker) | "qwen3_vl" (Qwen3-VL-Reranker / -Embedding)
  task                 "rerank" | "embed"
  dtype                weight storage dtype of the ONNX files ("float32" | "float16" | "bfloat16")
  quantization         null, or {"scheme": "int8" | "int4", "bits", "block_size", "accuracy_level",
                       "symmetric": true, "op": "com.microsoft.MatMulNBits"} (export/quantize.py)
  dims                 hidden_size, num_layers, num_heads, num_kv_heads, head_dim, vocab_size,
                       deepstack_layers (K of deepstack_embeds; 0 for text)
  special_tokens       yes, no, image_pad, video_pad, vision_start, vision_end, im_start, im_end, endoftext
                       (video_pad: recorded by exports whose decoder fills <|video_pad|>)
  prompt               system / default instruction the export used (the Rust core's prompt.rs constants)
  max_length           default max prompt tokens; context_length: the hard ceiling
  image                vision geometry + default pixel budget (qwen3_vl only)
  files                {"tokenizer": ..., "decoder": ..., "decoder_data": ..., "vision": ...}
  decoder              graph input / output names
  source               {"path", "hash"} of the checkpoint it came from

Every default recorded here comes from the Rust core (``vlrank._native``), the one owner of the model
constants; the manifest records what an export used, so a directory keeps describing itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlrank import _native
from vlrank.errors import ModelDirectoryError

MANIFEST = "vlrank.json"
FORMAT = 1
FAMILIES = ("qwen3", "qwen3_vl")
TASKS = ("rerank", "embed")

PROMPT_DEFAULTS = {
    ("qwen3_vl", "rerank"): {"system": _native.RERANK_SYSTEM, "instruction": _native.VL_RERANK_DEFAULT_INSTRUCTION},
    ("qwen3_vl", "embed"): {"system": None, "instruction": _native.EMBED_DEFAULT_INSTRUCTION},
    ("qwen3", "rerank"): {"system": _native.RERANK_SYSTEM, "instruction": _native.TEXT_RERANK_DEFAULT_INSTRUCTION},
}
MAX_LENGTH_DEFAULTS = {
    ("qwen3_vl", "rerank"): _native.VL_RERANK_MAX_LENGTH,
    ("qwen3_vl", "embed"): _native.EMBED_MAX_LENGTH,
    ("qwen3", "rerank"): _native.TEXT_RERANK_MAX_LENGTH,
}

SPECIAL_TOKEN_TEXT = {
    "endoftext": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
    "image_pad": "<|image_pad|>",
    "video_pad": "<|video_pad|>",
}


def special_token_ids(tokenizer_json: Path) -> dict[str, int]:
    """yes / no (plain vocabulary entries) and the template special tokens, read from tokenizer.json."""
    try:
        doc = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirectoryError(f"{tokenizer_json}: unreadable tokenizer ({exc})", field="model") from exc
    vocab = doc.get("model", {}).get("vocab", {})
    added = {t["content"]: t["id"] for t in doc.get("added_tokens", [])}
    out: dict[str, int] = {}
    for word in ("yes", "no"):
        if word not in vocab:
            raise ModelDirectoryError(f"{tokenizer_json}: token '{word}' is not in the vocabulary; "
                                      "pass the checkpoint's own Qwen tokenizer.json", field="model")
        out[word] = int(vocab[word])
    for key, text in SPECIAL_TOKEN_TEXT.items():
        if text in added:
            out[key] = int(added[text])
        elif text in vocab:
            out[key] = int(vocab[text])
    return out


def write_manifest(out_dir: Path, data: dict) -> Path:
    path = out_dir / MANIFEST
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


__all__ = ["MANIFEST", "FORMAT", "FAMILIES", "TASKS", "PROMPT_DEFAULTS", "MAX_LENGTH_DEFAULTS", "special_token_ids",
           "write_manifest"]
