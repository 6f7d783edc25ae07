"""The model-directory format: ``vlrank.json`` as one ``Manifest`` dataclass, written by the exporter
(``Manifest.write``) and read by the engine (``read_manifest``).

A leaf: it imports the Rust core's model constants (``vlrank._native``) and the error classes, nothing
else of vlrank and nothing heavy (no onnx, no onnxruntime), so the runtime reads a directory without
loading the exporter.

Fields (format 1):
  format, vlrank_version
  name                 model name reported in API responses (checkpoint directory name or hub id)
  family               "qwen3" (text Qwen3-Reranker) | "qwen3_vl" (Qwen3-VL-Reranker / -Embedding)
  task                 "rerank" | "embed"
  dtype                weight storage dtype of the ONNX files ("float32" | "float16" | "bfloat16")
  precision, provider  compute precision of the graphs and the provider they are built for: "float32"
                       (cpu), "float16" | "bfloat16" (cuda: half graphs), "int8" (cpu: a float32 graph
                       whose Linears multiply int8 activations; never a half / CUDA graph)
  quantization         null, or {"scheme": "int8" | "int4", "bits", "block_size", "accuracy_level",
                       "symmetric": true, "op": "com.microsoft.MatMulNBits"} (export/quantize.py); an
                       int8-compute export adds "compute": "int8", "ops" {"default", "guarded"} and
                       "guarded" (the Linears kept at per-block activation scales)
  architecture         the checkpoint's architecture class name
  dims                 hidden_size, num_layers, num_heads, num_kv_heads, head_dim, vocab_size,
                       deepstack_layers (K of deepstack_embeds; 0 for text), intermediate_size (the MLP
                       width; exports before round 4 lack it and the engine reads it from the graph)
  special_tokens       yes, no, image_pad, video_pad, vision_start, vision_end, im_start, im_end, endoftext
                       (video_pad: recorded by exports whose decoder fills <|video_pad|>)
  prompt               system / default instruction the export used (the Rust core's prompt.rs constants)
  max_length           default max prompt tokens; context_length: the hard ceiling
  image                vision geometry + default pixel budget (qwen3_vl only)
  vision               the vision tower's widths and rope numbers (qwen3_vl only; the same numbers the graph
                       keeps in its ``vlrank.vision.*`` metadata; exports before round 4 lack it and the
                       engine reads the graph's metadata instead)
  files                {"tokenizer": ..., "decoder": ..., "decoder_data": ..., "vision": ...}
  decoder              graph input / output names, position_ids rank; prefix_kv: true when the decoder takes a
                       shared prompt prefix's K/V (past_key.{i} / past_value.{i}, export/decoder.py;
                       export(prefix_kv=True)) — other exports score every pair on its full prompt
  source               {"path", "hash"} of the checkpoint it came from

Every default recorded here comes from the Rust core, the one owner of the model constants; the
manifest records what an export used, so a directory keeps describing itself.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from vlrank import _native
from vlrank.errors import ModelDirectoryError

MANIFEST = "vlrank.json"
FORMAT = 1
FAMILIES = ("qwen3", "qwen3_vl")
TASKS = ("rerank", "embed")
DECODER_FILE = "decoder.onnx"
VISION_FILE = "vision.onnx"

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

#: the text of every special token the manifest records an id for ("yes" / "no" are plain words)
SPECIAL_TOKEN_TEXT = {
    "endoftext": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
    "image_pad": "<|image_pad|>",
    "video_pad": "<|video_pad|>",
}


#: compute precisions: CPU graphs (float32; int8 = int8 activations in a float32 graph) and CUDA half graphs
CPU_PRECISIONS = ("float32", "int8")
HALF_PRECISIONS = ("float16", "bfloat16")


def provider_of(precision: str) -> str:
    """The provider a graph of ``precision`` is built for: "cuda" for the half graphs, else "cpu"."""
    return "cuda" if precision in HALF_PRECISIONS else "cpu"


def token_text(name: str) -> str:
    """The token string of ``special_tokens.<name>``: "yes" / "no" are plain words, the rest ``<|name|>``."""
    return name if name in ("yes", "no") else f"<|{name}|>"


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
    #: the MLP width (None: an export made before the manifest carried it)
    intermediate_size: int | None = None


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


#: the VisionMeta fields the vision graph also keeps, as ``vlrank.vision.<name>`` metadata_props
VISION_PROPS = ("head_dim", "rope_theta", "num_grid_per_side", "spatial_merge_size", "patch_dim",
                "out_hidden_size", "deepstack_layers")


@dataclass(frozen=True)
class VisionMeta:
    """What the runtime needs of the vision tower: its rope numbers and its widths."""

    head_dim: int
    rope_theta: float
    num_grid_per_side: int
    spatial_merge_size: int
    #: channels (3) x temporal patch (2) x patch x patch: the width of one pixel_values row
    patch_dim: int
    out_hidden_size: int
    deepstack_layers: int
    #: the tower's own widths (the memory budget's bytes per patch); None when read from graph metadata
    hidden_size: int | None = None
    intermediate_size: int | None = None

    @property
    def patch_size(self) -> int:
        return int(round((self.patch_dim / 6) ** 0.5))

    def props(self) -> dict[str, str]:
        """The graph's ``metadata_props`` entries."""
        return {f"vlrank.vision.{k}": repr(v) if isinstance(v, float) else str(v)
                for k, v in asdict(self).items() if k in VISION_PROPS}

    @classmethod
    def from_props(cls, metadata: dict[str, str]) -> VisionMeta:
        """The ``vlrank.vision.*`` entries of a vision graph's metadata (a session's custom metadata map)."""
        try:
            return _typed(cls, {k: metadata[f"vlrank.vision.{k}"] for k in VISION_PROPS})
        except KeyError as exc:
            raise ModelDirectoryError(
                f"the vision graph lacks its metadata {exc}; re-export the model with this vlrank version",
                field="model") from exc


@dataclass(frozen=True)
class Manifest:
    """A validated vlrank.json plus the directory it lives in."""

    root: Path
    name: str
    family: str
    task: str
    dtype: str
    #: compute precision ("float32" | "float16" | "bfloat16" | "int8") and the provider it is built for
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
    #: None for a text model, or an export made before the manifest carried it (read the graph's metadata)
    vision: VisionMeta | None = None
    architecture: str = ""
    vlrank_version: str = ""
    #: the decoder can run a prompt's suffix against a shared prefix's K/V (``Reranker(share_prefix=...)``)
    prefix_kv: bool = False

    @property
    def int8_compute(self) -> bool:
        """An int8-compute export (precision "int8"): a CPU graph, see ``providers_for_precision``."""
        return self.precision == "int8"

    @property
    def has_vision(self) -> bool:
        return "vision" in self.files

    @property
    def pad_id(self) -> int:
        return int(self.special.get("endoftext", 151643))

    @property
    def image_pad_id(self) -> int | None:
        return self.special.get("image_pad")

    @property
    def video_pad_id(self) -> int | None:
        """<|video_pad|>'s id; None for an export whose decoder does not fill video features (made before
        vlrank read videos, or a text model): such a directory must be re-exported for video input."""
        return self.special.get("video_pad")

    @property
    def decoder_inputs(self) -> list[str]:
        return ["input_ids", "attention_mask", "position_ids"] + (
            ["image_embeds", "deepstack_embeds"] if self.family == "qwen3_vl" else [])

    def file(self, key: str) -> Path:
        """The file ``files.<key>`` names, always inside the model directory (checked by read_manifest and
        again here, after resolving symlinks, so a link planted later cannot lead out of it either)."""
        try:
            rel = self.files[key]
        except KeyError:
            raise ModelDirectoryError(f"{self.root}/{MANIFEST} lists no '{key}' file; re-export the model",
                                      field="model") from None
        path = _confined(self.root, key, rel)
        if not path.is_file():
            raise ModelDirectoryError(f"{path} is missing; re-export the model (vlrank export SRC {self.root})",
                                      field="model")
        return path

    def to_json(self) -> dict[str, Any]:
        """The ``vlrank.json`` document (``read_manifest`` of it gives this manifest back)."""
        dims = asdict(self.dims)
        if dims["intermediate_size"] is None:
            del dims["intermediate_size"]
        data: dict[str, Any] = {
            "format": FORMAT,
            "vlrank_version": self.vlrank_version,
            "name": self.name,
            "family": self.family,
            "task": self.task,
            "dtype": self.dtype,
            "precision": self.precision,
            "provider": self.provider,
            "quantization": self.quantization,
            "architecture": self.architecture,
            "dims": dims,
            "special_tokens": dict(self.special),
            "prompt": asdict(self.prompt),
            "max_length": self.max_length,
            "context_length": self.context_length,
            "files": dict(self.files),
            "decoder": {"inputs": self.decoder_inputs, "output": self.decoder_output,
                        "position_ids_rank": 3 if self.family == "qwen3_vl" else 2,
                        "prefix_kv": self.prefix_kv},
            "source": {"path": self.source_path, "hash": self.source_hash},
        }
        if self.image is not None:
            data["image"] = asdict(self.image)
        if self.vision is not None:
            data["vision"] = asdict(self.vision)
        return data

    def write(self) -> Path:
        """Write ``root/vlrank.json``; returns its path."""
        path = self.root / MANIFEST
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
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
    except ModelDirectoryError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a missing field, a value of the wrong kind
        raise ModelDirectoryError(f"{path}: malformed manifest ({type(exc).__name__}: {exc}); re-export the model",
                                  field="model") from exc


def _confined(root: Path, key: str, rel: str) -> Path:
    """``root / rel`` when it stays inside ``root`` (relative, no ``..``, no symlink out); else the error."""
    candidate = Path(rel)
    inside = not candidate.is_absolute() and ".." not in candidate.parts and rel.strip() != ""
    if inside:
        try:
            inside = (root / candidate).resolve().is_relative_to(root.resolve())
        except (OSError, RuntimeError):  # a symlink loop
            inside = False
    if not inside:
        raise ModelDirectoryError(
            f"{root}/{MANIFEST}: files.{key} = {rel!r} points outside the model directory; every file must be a "
            "relative path inside it; re-export the model",
            field="model",
        )
    return root / candidate


def _check_consistent(m: Manifest) -> None:
    """What the manifest says about itself: positive dims, token ids inside the vocabulary, the ids a
    task needs present, a sane pixel budget. Raises ValueError (reported as a malformed manifest)."""
    sizes = {**{f"dims.{k}": v for k, v in vars(m.dims).items()},
             **({f"vision.{k}": v for k, v in vars(m.vision).items()} if m.vision else {})}
    for name, value in sizes.items():
        if value is not None and value < (0 if name.endswith("deepstack_layers") else 1):
            raise ValueError(f"{name} = {value} is not a positive size")
    for name, value in m.special.items():
        if not 0 <= value < m.dims.vocab_size:
            raise ValueError(f"special_tokens.{name} = {value} is outside the vocabulary "
                             f"(0..{m.dims.vocab_size - 1}, dims.vocab_size)")
    needed = {"endoftext", "im_start", "im_end"} | ({"yes", "no"} if m.task == "rerank" else set())
    if m.family == "qwen3_vl":
        needed |= {"vision_start", "vision_end", "image_pad"}
    missing = sorted(needed - set(m.special))
    if missing:
        raise ValueError(f"special_tokens lacks {missing}")
    if not 1 <= m.max_length <= m.context_length:
        raise ValueError(f"max_length = {m.max_length} is not within 1..context_length ({m.context_length})")
    for key in ("tokenizer", "decoder") + (("vision",) if m.family == "qwen3_vl" else ()):
        if key not in m.files:
            raise ValueError(f"files lacks '{key}'")
    if m.precision not in CPU_PRECISIONS + HALF_PRECISIONS:
        raise ValueError(f"precision = {m.precision!r} is not one of {CPU_PRECISIONS + HALF_PRECISIONS}")
    if m.precision == "int8" and (m.provider != "cpu" or (m.quantization or {}).get("compute") != "int8"):
        # int8 compute is a CPU graph of integer GEMMs: never to be loaded as a half-precision CUDA graph
        raise ValueError(f"precision = 'int8' needs provider 'cpu' and quantization.compute 'int8' (found provider "
                         f"{m.provider!r}, quantization {m.quantization!r})")
    if m.image is not None:
        im = m.image
        if min(im.patch_size, im.spatial_merge_size, im.temporal_patch_size, im.min_pixels) < 1 \
                or im.min_pixels > im.max_pixels:
            raise ValueError(f"image = {vars(im)} is not a valid geometry / pixel budget")


def _typed(cls: type, data: dict[str, Any]) -> Any:
    """``cls`` (a dataclass of ints / floats / optional ints) from ``data``: every field without a default
    is required; each value is converted to its declared type."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING:
                raise KeyError(f.name)
            continue
        value = data[f.name]
        kwargs[f.name] = None if value is None else float(value) if f.type == "float" else int(value)
    return cls(**kwargs)


def _parse(root: Path, data: dict[str, Any]) -> Manifest:
    family, task = data["family"], data["task"]
    if family not in FAMILIES or task not in TASKS:
        raise ValueError(f"family {family!r} / task {task!r} is not one this vlrank serves")
    image = data.get("image")
    prompt = data.get("prompt") or PROMPT_DEFAULTS.get((family, task), {"system": None, "instruction": ""})
    files = {str(k): str(v) for k, v in data["files"].items()}
    for key, rel in files.items():
        _confined(root, key, rel)
    source = data.get("source") or {}
    manifest = Manifest(
        root=root,
        name=str(data["name"]),
        family=family,
        task=task,
        dtype=str(data.get("dtype", "float32")),
        precision=str(data.get("precision", "float32")),
        provider=str(data.get("provider", "cpu")),
        dims=_typed(Dims, data["dims"]),
        special={str(k): int(v) for k, v in data["special_tokens"].items()},
        prompt=Prompt(system=prompt.get("system"), instruction=str(prompt.get("instruction") or "")),
        max_length=int(data["max_length"]),
        context_length=int(data.get("context_length", _native.CONTEXT_TOKENS)),
        files=files,
        decoder_output=str(data["decoder"]["output"]),
        image=None if image is None else _typed(ImageDefaults, {
            "min_pixels": _native.DEFAULT_MIN_PIXELS, "max_pixels": _native.DEFAULT_MAX_PIXELS, **image}),
        source_path=str(source.get("path", "")),
        source_hash=str(source.get("hash", "")),
        quantization=dict(data["quantization"]) if data.get("quantization") else None,
        vision=_typed(VisionMeta, data["vision"]) if data.get("vision") else None,
        architecture=str(data.get("architecture") or ""),
        vlrank_version=str(data.get("vlrank_version") or ""),
        prefix_kv=data["decoder"].get("prefix_kv") is True,
    )
    _check_consistent(manifest)
    return manifest


__all__ = ["MANIFEST", "FORMAT", "FAMILIES", "TASKS", "DECODER_FILE", "VISION_FILE", "PROMPT_DEFAULTS",
           "CPU_PRECISIONS", "HALF_PRECISIONS", "provider_of",
           "MAX_LENGTH_DEFAULTS", "SPECIAL_TOKEN_TEXT", "VISION_PROPS", "token_text", "Dims", "Prompt",
           "ImageDefaults", "VisionMeta", "Manifest", "read_manifest"]
