"""The exporter's side of ``vlrank.json``: the special-token ids of a checkpoint's tokenizer and the
``Manifest`` an export writes. The format (the dataclass, its fields, the defaults) is ``vlrank.modeldir``,
which the engine reads without importing this package.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlrank import _native
from vlrank.errors import ModelDirectoryError
from vlrank.export.checkpoint import Checkpoint
from vlrank.modeldir import (
    FAMILIES,
    FORMAT,
    MANIFEST,
    MAX_LENGTH_DEFAULTS,
    PROMPT_DEFAULTS,
    SPECIAL_TOKEN_TEXT,
    TASKS,
    Dims,
    ImageDefaults,
    Manifest,
    Prompt,
    VisionMeta,
    provider_of,
)
from vlrank.version import __version__


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


def export_manifest(out: Path, ckpt: Checkpoint, *, name: str, task: str, dtype: str, precision: str,
                    quantization: dict | None, special: dict[str, int], files: dict[str, str],
                    vision: VisionMeta | None, source_path: str, source_hash: str) -> Manifest:
    """The manifest of the export of ``ckpt`` into ``out``: the checkpoint's widths, the defaults the Rust
    core owns for (family, task), and what the export chose."""
    t = ckpt.text
    vl = ckpt.family == "qwen3_vl"
    vision_cfg = ckpt.vision_config or {}
    image = ImageDefaults(
        patch_size=int(vision_cfg.get("patch_size", 16)),
        spatial_merge_size=int(vision_cfg.get("spatial_merge_size", 2)),
        temporal_patch_size=int(vision_cfg.get("temporal_patch_size", 2)),
        min_pixels=_native.DEFAULT_MIN_PIXELS,
        max_pixels=_native.DEFAULT_MAX_PIXELS,
    ) if vl else None
    prompt = PROMPT_DEFAULTS[(ckpt.family, task)]
    return Manifest(
        root=out,
        name=name,
        family=ckpt.family,
        task=task,
        dtype=dtype,
        precision=precision,
        provider=provider_of(precision),
        quantization=quantization,
        architecture=ckpt.architecture,
        vlrank_version=__version__,
        dims=Dims(hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.num_heads,
                  num_kv_heads=t.num_kv_heads, head_dim=t.head_dim, vocab_size=t.vocab_size,
                  deepstack_layers=vision.deepstack_layers if vision else 0, intermediate_size=t.intermediate_size),
        special=special,
        prompt=Prompt(system=prompt["system"], instruction=prompt["instruction"]),
        max_length=MAX_LENGTH_DEFAULTS[(ckpt.family, task)],
        context_length=_native.CONTEXT_TOKENS,
        files=files,
        decoder_output={"embed": "embedding"}.get(task, "logit" if vl else "logits"),
        image=image,
        vision=vision,
        source_path=source_path,
        source_hash=source_hash,
    )


__all__ = ["MANIFEST", "FORMAT", "FAMILIES", "TASKS", "PROMPT_DEFAULTS", "MAX_LENGTH_DEFAULTS", "special_token_ids",
           "export_manifest"]
