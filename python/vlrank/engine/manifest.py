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

    @property
    def video_pad_id(self) -> int | None:
        """<|video_pad|>'s id; None for an export whose decoder does not fill video features (made before
        vlrank read videos, or a text model): such a directory must be re-exported for video input."""
        return self.special.get("video_pad")

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
    except (KeyError, TypeError, ValueError) as exc:
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
    for name, value in vars(m.dims).items():
        if value < (0 if name == "deepstack_layers" else 1):
            raise ValueError(f"dims.{name} = {value} is not a positive size")
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
    if m.image is not None:
        im = m.image
        if min(im.patch_size, im.spatial_merge_size, im.temporal_patch_size, im.min_pixels) < 1 \
                or im.min_pixels > im.max_pixels:
            raise ValueError(f"image = {vars(im)} is not a valid geometry / pixel budget")


def _parse(root: Path, data: dict[str, Any]) -> Manifest:
    family, task = data["family"], data["task"]
    if family not in FAMILIES or task not in TASKS:
        raise ValueError(f"family {family!r} / task {task!r} is not one this vlrank serves")
    dims = data["dims"]
    image = data.get("image")
    prompt = data.get("prompt") or PROMPT_DEFAULTS.get((family, task), {"system": None, "instruction": ""})
    files = {str(k): str(v) for k, v in data["files"].items()}
    for key, rel in files.items():
        _confined(root, key, rel)
    manifest = Manifest(
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
    _check_consistent(manifest)
    return manifest


def _token_string(name: str) -> str:
    return name if name in ("yes", "no") else f"<|{name}|>"


def check_tokenizer(manifest: Manifest, tokenizer: Any) -> None:
    """The tokenizer file agrees with the manifest: every special id is the tokenizer's id of that token,
    and the tokenizer's ids fit the decoder's embedding table (dims.vocab_size)."""
    problems = []
    if tokenizer.vocab_size > manifest.dims.vocab_size:
        problems.append(f"the tokenizer has {tokenizer.vocab_size} tokens, more than dims.vocab_size = "
                        f"{manifest.dims.vocab_size}")
    for name, value in sorted(manifest.special.items()):
        actual = tokenizer.token_to_id(_token_string(name))
        if actual != value:
            problems.append(f"special_tokens.{name} = {value} but the tokenizer's id of "
                            f"{_token_string(name)!r} is {actual}")
    _report(manifest, "tokenizer", problems)


def check_graph(manifest: Manifest, session: Any, *, graph: str) -> None:
    """The ``graph`` ("decoder" | "vision") session's own inputs and outputs agree with the manifest
    (names, hidden size, deepstack layers, patch size); only fixed graph dims are compared. A directory
    whose files were edited or mixed fails here, at load, instead of inside ONNX Runtime at call time."""
    ins = {i.name: list(i.shape) for i in session.get_inputs()}
    outs = {o.name: list(o.shape) for o in session.get_outputs()}
    d = manifest.dims
    want: list[tuple[str, dict[str, list[Any]], str, int, Any, str]] = []  # (kind, table, name, axis, value, what)
    problems = []
    if graph == "decoder":
        vl = manifest.family == "qwen3_vl"
        names = ["input_ids", "attention_mask", "position_ids"] + (["image_embeds", "deepstack_embeds"] if vl else [])
        missing = [n for n in names if n not in ins]
        if missing:
            problems.append(f"the decoder graph lacks the inputs {missing} (it has {sorted(ins)})")
        if manifest.decoder_output not in outs:
            problems.append(f"decoder.output = {manifest.decoder_output!r} is not an output of the decoder graph "
                            f"(it has {sorted(outs)})")
        want += [("input", ins, "position_ids", -1, 3 if vl else 2, "rank")]
        if vl:
            want += [("input", ins, "image_embeds", -1, d.hidden_size, "dims.hidden_size"),
                     ("input", ins, "deepstack_embeds", 0, d.deepstack_layers, "dims.deepstack_layers"),
                     ("input", ins, "deepstack_embeds", -1, d.hidden_size, "dims.hidden_size")]
        if manifest.task == "embed":
            want.append(("output", outs, manifest.decoder_output, -1, d.hidden_size, "dims.hidden_size"))
        elif not vl:
            want.append(("output", outs, manifest.decoder_output, -1, 2, "[no, yes] logits"))
    elif graph == "vision":
        want += [("output", outs, "image_embeds", -1, d.hidden_size, "dims.hidden_size"),
                 ("output", outs, "deepstack_embeds", 0, d.deepstack_layers, "dims.deepstack_layers")]
        if manifest.image is not None:
            im = manifest.image
            want.append(("input", ins, "pixel_values", -1, 3 * im.temporal_patch_size * im.patch_size ** 2,
                         "3 x image.temporal_patch_size x image.patch_size^2"))
        for name in ("pixel_values", "image_embeds", "deepstack_embeds"):
            if name not in ins and name not in outs:
                problems.append(f"the vision graph has no {name!r}")
    for kind, table, name, axis, value, what in want:
        shape = table.get(name)
        if shape is None:
            continue  # reported above as a missing input / output
        if what == "rank":
            if len(shape) != value:
                problems.append(f"the decoder's position_ids has rank {len(shape)}, the {manifest.family} family "
                                f"takes rank {value}")
            continue
        got = shape[axis] if shape else None
        if isinstance(got, int) and got != value:
            problems.append(f"the {graph} graph's {kind} {name} has size {got} on axis {axis}, the manifest says "
                            f"{value} ({what})")
    _report(manifest, f"{graph} graph", problems)


def _report(manifest: Manifest, what: str, problems: list[str]) -> None:
    if problems:
        raise ModelDirectoryError(
            f"{manifest.root}: {MANIFEST} does not match its {what}: " + "; ".join(problems)
            + f"; re-export the model (vlrank export SRC {manifest.root})",
            field="model",
        )


__all__ = [
    "check_graph",
    "check_tokenizer",
    "MANIFEST",
    "Dims",
    "Prompt",
    "ImageDefaults",
    "Manifest",
    "read_manifest",
]
