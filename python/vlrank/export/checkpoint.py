"""Read a Hugging Face checkpoint directory without torch: config (both config.json dialects) and
streamed safetensors tensors (bf16 / f16 / f32, single file or sharded).

Why not ``safetensors.safe_open(framework="numpy")``: numpy has no bfloat16, so it refuses bf16 tensors,
which is how every released Qwen3 checkpoint is stored. We parse the 8-byte-length JSON header ourselves
and memory-map the raw bytes; bf16 widens to float32 exactly by shifting its 16 bits into the high half
of a uint32. Tensors are materialised one at a time, so peak memory is about the largest tensor.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlrank.errors import InvalidInputError, ModelDirectoryError
from vlrank.modeldir import TASKS

# safetensors dtype tag -> (numpy storage dtype, bytes per element). BF16 is stored as raw uint16 bits.
_STORAGE = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
    "F64": (np.dtype("<f8"), 8),
    "I64": (np.dtype("<i8"), 8),
    "I32": (np.dtype("<i4"), 4),
}

SUPPORTED_ARCHITECTURES = {
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3VLForConditionalGeneration": "qwen3_vl",
}


@dataclass(frozen=True)
class TextConfig:
    """The decoder hyper-parameters, normalised from either config.json dialect."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int
    tie_word_embeddings: bool
    # Qwen3-VL only: frequency split between the (t, h, w) position axes, applied interleaved.
    mrope_section: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int


@dataclass
class Checkpoint:
    """An opened checkpoint: parsed config plus an index of every tensor (no tensor is read yet)."""

    path: Path
    name: str
    family: str  # "qwen3" | "qwen3_vl"
    architecture: str
    config: dict
    text: TextConfig
    dtype: str  # the checkpoint's declared dtype ("bfloat16", "float16", "float32")
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    _maps: dict[Path, np.memmap] = field(default_factory=dict, repr=False)

    @property
    def vision_config(self) -> dict | None:
        return self.config.get("vision_config")

    @property
    def text_prefix(self) -> str:
        """Prefix of the language-model tensors ('model.language_model.', 'model.', ...)."""
        for name in self.tensors:
            if name.endswith("embed_tokens.weight"):
                return name[: -len("embed_tokens.weight")]
        raise ModelDirectoryError(
            f"{self.path}: no '*embed_tokens.weight' tensor in the safetensors files; "
            "pass a complete Qwen3 / Qwen3-VL checkpoint directory",
            field="model",
        )

    def has(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise ModelDirectoryError(
                f"{self.path}: tensor '{name}' is missing from the safetensors files; the checkpoint is "
                "incomplete or not a supported Qwen3 / Qwen3-VL layout",
                field="model",
            ) from None

    def raw(self, name: str) -> np.ndarray:
        """The stored array (bf16 as uint16 bits), memory-mapped: no copy until the caller needs one."""
        info = self.info(name)
        storage, size = _STORAGE[info.dtype]
        mm = self._maps.get(info.file)
        if mm is None:
            mm = np.memmap(info.file, dtype=np.uint8, mode="r")
            self._maps[info.file] = mm
        count = int(np.prod(info.shape, dtype=np.int64))
        if info.end - info.begin != count * size:
            raise ModelDirectoryError(
                f"{info.file.name}: tensor '{name}' has {info.end - info.begin} bytes for shape {info.shape}; "
                "the file is corrupt — download it again",
                field="model",
            )
        return mm[info.begin : info.end].view(storage).reshape(info.shape)

    def tensor(self, name: str, dtype: str = "float32") -> np.ndarray:
        """Read one tensor converted to ``dtype`` ("float32", "float16" or "bfloat16"; bfloat16 is
        returned as its uint16 bit pattern, the way ONNX stores it)."""
        info = self.info(name)
        raw = self.raw(name)
        if dtype == "bfloat16":
            if info.dtype == "BF16":
                return np.array(raw)
            return f32_to_bf16_bits(_widen(raw, info.dtype))
        if dtype == "float16":
            # (bench) row blocks: a float32 copy of the whole tensor would double the peak memory
            out = np.empty(raw.shape, np.float16)
            flat_in, flat_out = raw.reshape(-1), out.reshape(-1)
            for start in range(0, flat_in.size, _CHUNK):
                flat_out[start : start + _CHUNK] = _widen(flat_in[start : start + _CHUNK], info.dtype)
            return out
        return _widen(raw, info.dtype)

    def close(self) -> None:
        self._maps.clear()


def _widen(raw: np.ndarray, stored: str) -> np.ndarray:
    if stored == "BF16":
        return bf16_bits_to_f32(raw)
    return np.asarray(raw, dtype=np.float32)


_CHUNK = 1 << 22  # elements per block when converting a tensor piecewise (16 MiB of float32)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 is the high half of an f32: widening is exact. Shifted in place: one output-sized array."""
    out = bits.astype(np.uint32)
    out <<= 16
    return out.view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even f32 -> bf16 bit patterns (what torch's .to(bfloat16) does); NaN kept NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded = np.where(nan, np.uint16(0x7FC0), rounded)
    return rounded


def _read_header(path: Path) -> tuple[dict, int]:
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ModelDirectoryError(f"{path}: not a safetensors file (too short); download it again", field="model")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise ModelDirectoryError(f"{path}: not a safetensors file (bad header length)", field="model")
            header = json.loads(fh.read(n))
    except OSError as exc:
        raise ModelDirectoryError(f"cannot read {path}: {exc}", field="model") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # non-UTF-8 header bytes are corruption too
        raise ModelDirectoryError(f"{path}: corrupt safetensors header ({exc}); download it again", field="model") from exc
    return header, 8 + n


def _index_tensors(root: Path) -> dict[str, TensorInfo]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise ModelDirectoryError(f"{index}: unreadable shard index ({exc})", field="model") from exc
        files = sorted(set(weight_map.values()))
        for f in files:
            if not (root / f).is_file():
                raise ModelDirectoryError(
                    f"{root}: shard '{f}' listed in model.safetensors.index.json is missing; "
                    "download every shard of the checkpoint",
                    field="model",
                )
    else:
        files = sorted(p.name for p in root.glob("*.safetensors"))
        if not files:
            raise ModelDirectoryError(
                f"{root}: no model.safetensors (or model.safetensors.index.json + shards); "
                "pass a Hugging Face checkpoint directory with safetensors weights",
                field="model",
            )
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        header, base = _read_header(root / f)
        if not isinstance(header, dict):
            raise ModelDirectoryError(f"{root / f}: corrupt safetensors header (not a JSON object); download it "
                                      "again", field="model")
        size = (root / f).stat().st_size
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            # A truncated or hand-edited file is refused here, typed: each entry's shape and dtype must be
            # well-formed and its bytes must lie inside the file.
            try:
                b, e = (int(x) for x in meta["data_offsets"])
                shape = tuple(int(d) for d in meta["shape"])
                dtype = str(meta["dtype"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelDirectoryError(f"{root / f}: corrupt safetensors header entry for '{name}' ({exc!r}); "
                                          "download the file again", field="model") from exc
            if not 0 <= b <= e or base + e > size:
                raise ModelDirectoryError(
                    f"{root / f}: tensor '{name}' lies at bytes {base + b}..{base + e} but the file has {size} bytes; "
                    "the file is truncated or corrupt — download it again",
                    field="model",
                )
            if dtype not in _STORAGE:
                raise ModelDirectoryError(
                    f"{f}: tensor '{name}' has dtype {dtype}; vlrank reads BF16, F16 and F32 weights "
                    "(quantised checkpoints are not supported: use the original weights)",
                    field="model",
                )
            tensors[name] = TensorInfo(root / f, dtype, shape, base + b, base + e)
    return tensors


def _rope(tc: dict) -> tuple[float, tuple[int, ...] | None]:
    # Newer transformers: rope_parameters{rope_theta, rope_type, mrope_section}; released checkpoints:
    # top-level rope_theta + rope_scaling{mrope_section, mrope_interleaved, rope_type}.
    params = tc.get("rope_parameters") or {}
    scaling = tc.get("rope_scaling") or {}
    theta = params.get("rope_theta", tc.get("rope_theta"))
    if theta is None:
        raise ModelDirectoryError("config.json: no rope_theta (nor rope_parameters.rope_theta)", field="model")
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ModelDirectoryError(
            f"config.json: rope type '{rope_type}' is not supported (vlrank exports default / M-RoPE Qwen3 "
            "checkpoints); remove rope scaling from the config",
            field="model",
        )
    section = params.get("mrope_section", scaling.get("mrope_section"))
    return float(theta), (tuple(int(s) for s in section) if section else None)


def load_config(root: Path) -> dict:
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise ModelDirectoryError(
            f"{root}: config.json is missing; pass a Hugging Face checkpoint directory (config.json, "
            "tokenizer.json, *.safetensors) or an exported vlrank directory (vlrank.json)",
            field="model",
        )
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelDirectoryError(f"{cfg_path}: not valid JSON ({exc})", field="model") from exc


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint directory: parse config.json, check the architecture, index the tensors."""
    root = Path(path)
    if not root.is_dir():
        raise ModelDirectoryError(f"{root}: not a directory; pass a checkpoint directory", field="model")
    cfg = load_config(root)
    archs = cfg.get("architectures") or []
    arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        raise ModelDirectoryError(
            f"{root}: architecture {archs or cfg.get('model_type')} is not supported; vlrank exports "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (Qwen3-Reranker, Qwen3-VL-Reranker, Qwen3-VL-Embedding)",
            field="model",
        )
    family = SUPPORTED_ARCHITECTURES[arch]
    tc = cfg.get("text_config", cfg) if family == "qwen3_vl" else cfg
    theta, section = _rope(tc)
    try:
        hidden = int(tc["hidden_size"])
        heads = int(tc["num_attention_heads"])
        text = TextConfig(
            hidden_size=hidden,
            num_layers=int(tc["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(tc.get("num_key_value_heads", heads)),
            head_dim=int(tc.get("head_dim") or hidden // heads),
            intermediate_size=int(tc["intermediate_size"]),
            rms_norm_eps=float(tc.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            vocab_size=int(tc["vocab_size"]),
            tie_word_embeddings=bool(tc.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
            mrope_section=section if family == "qwen3_vl" else None,
        )
    except KeyError as exc:
        raise ModelDirectoryError(f"{root}/config.json: missing key {exc}", field="model") from exc
    if family == "qwen3_vl":
        if text.mrope_section is None:
            raise ModelDirectoryError(f"{root}/config.json: Qwen3-VL config without mrope_section", field="model")
        if sum(text.mrope_section) != text.head_dim // 2:
            raise ModelDirectoryError(
                f"{root}/config.json: mrope_section {list(text.mrope_section)} must sum to head_dim/2 = "
                f"{text.head_dim // 2}",
                field="model",
            )
    dtype = str(tc.get("dtype") or tc.get("torch_dtype") or cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return Checkpoint(
        path=root,
        name=root.resolve().name,
        family=family,
        architecture=arch,
        config=cfg,
        text=text,
        dtype=dtype,
        tensors=_index_tensors(root),
    )


def checkpoint_hash(path: str | Path) -> str:
    """A content key for a checkpoint directory (export cache key, manifest provenance).

    Small files (config, tokenizer, indices) are hashed whole. Weight files are keyed by their size,
    safetensors header and a few 1 MiB windows, so hashing a 16 GB checkpoint costs milliseconds rather
    than a full read; any re-download or re-save changes the header or the sampled bytes.
    """
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(root.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        h.update(p.name.encode() + b"\0")
        size = p.stat().st_size
        h.update(str(size).encode() + b"\0")
        with p.open("rb") as fh:
            if size <= 64 << 20 and not p.name.endswith(".safetensors"):
                h.update(fh.read())
                continue
            window = 1 << 20
            for off in (0, size // 3, 2 * size // 3, max(size - window, 0)):
                fh.seek(off)
                h.update(fh.read(window))
    return h.hexdigest()


# What vlrank serves, for the messages of infer_task.
SERVED = "Qwen3-Reranker (text), Qwen3-VL-Reranker and Qwen3-VL-Embedding"


def _text_embedding_reason(ckpt: Checkpoint, name: str) -> str | None:
    """Why a Qwen3ForCausalLM checkpoint is a Qwen3-Embedding (text) model rather than a Qwen3-Reranker, or None.

    Both families declare the same architecture, so config.json cannot tell them apart: the name can
    ("Qwen3-Embedding-0.6B"), and so can the weights — a bare Qwen3Model (language-model tensors not under
    'model.') has no causal-LM head, so it has no yes/no logits to score with. Exporting either as a
    reranker "succeeds" and returns meaningless scores, hence a refusal instead."""
    if "embedding" in name.lower():
        return f"'{name}' is named as a Qwen3-Embedding model"
    if ckpt.text_prefix != "model.":
        return f"'{name}' holds a bare Qwen3Model (no causal-LM head; Qwen3-Embedding's layout)"
    return None


def infer_task(ckpt: Checkpoint, name: str, task: str | None) -> str:
    """The export task of a checkpoint: ``task`` when given (and possible), else from config + name.

    Qwen3ForCausalLM with its causal-LM head is the text reranker (the only such family vlrank serves);
    a Qwen3-Embedding (text) checkpoint is refused whatever ``task`` says; Qwen3-VL needs -Reranker /
    -Embedding in its name, or ``task``."""
    if task is not None and task not in TASKS:
        raise InvalidInputError(f"task={task!r}; pass task='rerank' or task='embed'", field="task")
    if ckpt.family == "qwen3":
        reason = _text_embedding_reason(ckpt, name)
        if reason is not None:
            raise ModelDirectoryError(
                f"{reason}: a Qwen3-Embedding (text) checkpoint, which vlrank does not serve (its last-token "
                f"pooling and instruction format are not implemented). vlrank serves {SERVED}; for embeddings of "
                "text (and images), export a Qwen3-VL-Embedding checkpoint (e.g. Qwen/Qwen3-VL-Embedding-2B)",
                field="model")
        if task is not None and task != "rerank":
            raise InvalidInputError("a Qwen3ForCausalLM checkpoint is a text reranker; pass task='rerank'",
                                    field="task")
        return "rerank"
    if task is not None:
        return task
    lowered = name.lower()
    if "reranker" in lowered:
        return "rerank"
    if "embedding" in lowered:
        return "embed"
    raise ModelDirectoryError(
        f"cannot tell whether '{name}' is a reranker or an embedder (its name has neither '-Reranker' nor "
        "'-Embedding', and both share the Qwen3-VL architecture); pass task='rerank' or task='embed' "
        "(CLI: vlrank export --task, vlrank serve --task NAME=TASK)",
        field="task",
    )
