"""The typed, validated manifest (``vlrank.json``) of an exported model directory, read in one place.

The format (its fields, and the defaults an export records) is written by ``vlrank.export.manifest``;
``read_manifest`` checks it and returns a ``Manifest`` of dataclasses that the engine, the tasks, the
server and the CLI use instead of the raw JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlrank import _native
from vlrank.errors import ModelDirectoryError
from vlrank.export.manifest import FAMILIES, FORMAT, MANIFEST, PROMPT_DEFAULTS, TASKS

@dataclass(frozen=True)
class Dims:
    """The text decoder's shape."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    deepstack_layers: int = 0


@dataclass(frozen=True)
class Prompt:
    """The system prompt and default instruction the export used (None: the family has no system text)."""

    system: str | None
    instruction: str


@dataclass(frozen=True)
class ImageDefaults:
    """Vision geometry and the default pixel budget of a Qwen3-VL export."""

    patch_size: int
    spatial_merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int


@dataclass(frozen=True)
class Manifest:
    """A validated vlrank.json plus the directory it lives in."""

    root: Path
    name: str
    family: str
    task: str
    dtype: str
    #: compute dtype of the graphs ("float32" | "float16" | "bfloat16") and the provider they are built for
    precision: str
    provider: str
    dims: Dims
    special: dict[str, int]
    prompt: Prompt
    max_length: int
    context_length: int
    files: dict[str, str]
    decoder_output: str
    image: ImageDefaults | None
    source_path: str
    source_hash: str
    #: None, or the export's weight quantization {"scheme", "bits", "block_size", "accuracy_level", ...}
    quantization: dict | None = None

    @property
    def has_vision(self) -> bool:
        return "vision" in self.files

    @property
    def pad_id(self) -> int:
        return int(self.special.get("endoftext", 151643))

    @property
    def image_pad_id(self) -> int | None:
        return self.special.get("image_pad")

    def file(self, key: str) -> Path:
        try:
            rel = self.files[key]
        except KeyError:
            raise ModelDirectoryError(f"{self.root}/{MANIFEST} lists no '{key}' file; re-export the model",
                                      field="model") from None
        path = self.root / rel
        if not path.is_file():
            raise ModelDirectoryError(f"{path} is missing; re-export the model (vlrank export SRC {self.root})",
                                      field="model")
        return path


def read_manifest(model_dir: str | Path) -> Manifest:
    """The manifest of an exported directory; ModelDirectoryError (field "model") when it is missing,
    unreadable, of another format or lacks a field."""
    root = Path(model_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise ModelDirectoryError(
            f"{root}: no {MANIFEST}; pass a directory written by `vlrank export` or a checkpoint directory",
            field="model",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirectoryError(f"{path}: not valid JSON ({exc}); re-export the model", field="model") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ModelDirectoryError(
            f"{path}: manifest format {found!r}, this vlrank reads format {FORMAT}; re-export the model",
            field="model",
        )
    try:
        return _parse(root, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirectoryError(f"{path}: malformed manifest ({type(exc).__name__}: {exc}); re-export the model",
                                  field="model") from exc


def _parse(root: Path, data: dict[str, Any]) -> Manifest:
    family, task = data["family"], data["task"]
    if family not in FAMILIES or task not in TASKS:
        raise ValueError(f"family {family!r} / task {task!r} is not one this vlrank serves")
    dims = data["dims"]
    image = data.get("image")
    prompt = data.get("prompt") or PROMPT_DEFAULTS.get((family, task), {"system": None, "instruction": ""})
    files = {str(k): str(v) for k, v in data["files"].items()}
    return Manifest(
        root=root,
        name=str(data["name"]),
        family=family,
        task=task,
        dtype=str(data.get("dtype", "float32")),
        precision=str(data.get("precision", "float32")),
        provider=str(data.get("provider", "cpu")),
        dims=Dims(
            hidden_size=int(dims["hidden_size"]),
            num_layers=int(dims["num_layers"]),
            num_heads=int(dims["num_heads"]),
            num_kv_heads=int(dims["num_kv_heads"]),
            head_dim=int(dims["head_dim"]),
            vocab_size=int(dims["vocab_size"]),
            deepstack_layers=int(dims.get("deepstack_layers", 0)),
        ),
        special={str(k): int(v) for k, v in data["special_tokens"].items()},
        prompt=Prompt(system=prompt.get("system"), instruction=str(prompt.get("instruction") or "")),
        max_length=int(data["max_length"]),
        context_length=int(data.get("context_length", _native.CONTEXT_TOKENS)),
        files=files,
        decoder_output=str(data["decoder"]["output"]),
        image=None if image is None else ImageDefaults(
            patch_size=int(image["patch_size"]),
            spatial_merge_size=int(image["spatial_merge_size"]),
            temporal_patch_size=int(image["temporal_patch_size"]),
            min_pixels=int(image.get("min_pixels", _native.DEFAULT_MIN_PIXELS)),
            max_pixels=int(image.get("max_pixels", _native.DEFAULT_MAX_PIXELS)),
        ),
        source_path=str((data.get("source") or {}).get("path", "")),
        source_hash=str((data.get("source") or {}).get("hash", "")),
        quantization=dict(data["quantization"]) if data.get("quantization") else None,
    )


__all__ = [
    "MANIFEST",
    "Dims",
    "Prompt",
    "ImageDefaults",
    "Manifest",
    "read_manifest",
]
