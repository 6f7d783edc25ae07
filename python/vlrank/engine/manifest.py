"""``vlrank.json``: what an exported model directory holds and how to drive it.

Fields (format 1):
  format, vlrank_version
  name                 model name reported in API responses (checkpoint directory name or hub id)
  family               "qwen3" (text Qwen3-Reranker) | "qwen3_vl" (Qwen3-VL-Reranker / -Embedding)
  task                 "rerank" | "embed"
  dtype                weight storage dtype of the ONNX files ("float32" | "float16" | "bfloat16")
  dims                 hidden_size, num_layers, num_heads, num_kv_heads, head_dim, vocab_size,
                       deepstack_layers (K of deepstack_embeds; 0 for text)
  special_tokens       yes, no, image_pad, vision_start, vision_end, im_start, im_end, endoftext
  prompt               system / default instruction of the family+task
  max_length           default max prompt tokens; context_length: the hard ceiling
  image                vision geometry + default pixel budget (qwen3_vl only)
  files                {"tokenizer": ..., "decoder": ..., "decoder_data": ..., "vision": ...}
  decoder              graph input / output names
  source               {"path", "hash"} of the checkpoint it came from
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlrank.errors import ModelDirectoryError

MANIFEST = "vlrank.json"
FORMAT = 1
CONTEXT_LENGTH = 32768

VL_RERANK_SYSTEM = (
    'Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
    'Note that the answer can only be "yes" or "no".'
)
PROMPT_DEFAULTS = {
    ("qwen3_vl", "rerank"): {
        "system": VL_RERANK_SYSTEM,
        "instruction": "Given a search query, retrieve relevant candidates that answer the query.",
    },
    ("qwen3_vl", "embed"): {"system": None, "instruction": "Represent the user's input."},
    ("qwen3", "rerank"): {
        "system": VL_RERANK_SYSTEM,
        "instruction": "Given a web search query, retrieve relevant passages that answer the query",
    },
}
MAX_LENGTH_DEFAULTS = {("qwen3_vl", "rerank"): 10240, ("qwen3_vl", "embed"): 8192, ("qwen3", "rerank"): 8192}

SPECIAL_TOKEN_TEXT = {
    "endoftext": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
    "image_pad": "<|image_pad|>",
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


@dataclass(frozen=True)
class Manifest:
    """A parsed vlrank.json plus the directory it lives in."""

    root: Path
    data: dict

    @property
    def family(self) -> str:
        return self.data["family"]

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def special(self) -> dict[str, int]:
        return self.data["special_tokens"]

    @property
    def max_length(self) -> int:
        return int(self.data["max_length"])

    def file(self, key: str) -> Path:
        try:
            rel = self.data["files"][key]
        except KeyError:
            raise ModelDirectoryError(f"{self.root}/{MANIFEST} lists no '{key}' file; re-export the model",
                                      field="model") from None
        path = self.root / rel
        if not path.is_file():
            raise ModelDirectoryError(f"{path} is missing; re-export the model (vlrank export SRC {self.root})",
                                      field="model")
        return path


def write_manifest(out_dir: Path, data: dict) -> Path:
    path = out_dir / MANIFEST
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_manifest(model_dir: str | Path) -> Manifest:
    root = Path(model_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise ModelDirectoryError(
            f"{root}: no {MANIFEST}; pass a directory written by `vlrank export` or a checkpoint directory",
            field="model",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelDirectoryError(f"{path}: not valid JSON ({exc}); re-export the model", field="model") from exc
    if data.get("format") != FORMAT:
        raise ModelDirectoryError(
            f"{path}: manifest format {data.get('format')!r}, this vlrank reads format {FORMAT}; re-export the model",
            field="model",
        )
    return Manifest(root, data)
