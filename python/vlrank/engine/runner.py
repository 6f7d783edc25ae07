"""ONNX Runtime sessions: provider choice and a run helper.

Threads: ONNX Runtime owns the model's compute threads (its intra-op pool sizes itself to the cores);
vlrank adds none around a run. Preprocessing parallelism lives in the Rust core, which releases the GIL.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlrank.errors import InvalidInputError, ModelDirectoryError, RuntimeUnavailableError, VlrankError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_ALIASES = {"cpu": [CPU], "cuda": [CUDA, CPU], "gpu": [CUDA, CPU]}


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise RuntimeUnavailableError("onnxruntime is not installed: pip install onnxruntime "
                                      "(or onnxruntime-gpu for CUDA)") from exc
    return ort


def resolve_providers(providers: str | Sequence[str] | None) -> list[str]:
    """None / "auto": CUDA when this onnxruntime has it, else CPU. "cpu" / "cuda" or a list of ORT
    provider names. Asking for CUDA where it is missing warns and falls back to CPU."""
    available = _ort().get_available_providers()
    if providers is None or providers == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    if isinstance(providers, str):
        if providers.lower() not in _ALIASES:
            raise InvalidInputError(
                f"providers={providers!r}; pass 'auto', 'cpu', 'cuda' or a list of ONNX Runtime provider names",
                field="providers",
            )
        wanted = _ALIASES[providers.lower()]
    else:
        # (QA fix) a non-iterable (providers=3) used to raise TypeError inside create_session, which reported
        # it as an unloadable model (ModelDirectoryError, field "model").
        if isinstance(providers, (bytes, dict)) or not isinstance(providers, Sequence):
            raise InvalidInputError(
                f"providers={providers!r}; pass 'auto', 'cpu', 'cuda' or a list of ONNX Runtime provider names",
                field="providers",
            )
        wanted = list(providers)
        if not wanted or not all(isinstance(p, str) for p in wanted):
            raise InvalidInputError("providers must be a non-empty list of provider names, e.g. "
                                    "['CUDAExecutionProvider', 'CPUExecutionProvider']", field="providers")
    missing = [p for p in wanted if p not in available]
    if CUDA in missing:
        warnings.warn(
            "CUDA was requested but this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu "
            "and a matching CUDA); running on CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    chosen = [p for p in wanted if p in available]
    if not chosen:
        if missing == [CUDA]:
            return [CPU]
        raise RuntimeUnavailableError(
            f"none of the providers {wanted} is available; this onnxruntime offers {available}",
            field="providers",
        )
    return chosen


def create_session(model_path: str | Path, *, providers: str | Sequence[str] | None = None,
                   ort_options: Mapping[str, str] | None = None):
    """An InferenceSession with full graph optimisation on the chosen providers.

    ``ort_options``: ONNX Runtime session config entries (``SessionOptions.add_session_config_entry``),
    e.g. ``{"session.intra_op.allow_spinning": "0"}`` — a server sets it so idle ORT threads do not spin
    on the cores its event loop needs between batches."""
    ort = _ort()
    path = Path(model_path)
    if not path.is_file():
        raise ModelDirectoryError(f"{path} is missing; re-export the model", field="model")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    for key, value in check_ort_options(ort_options).items():
        options.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=resolve_providers(providers))
    except (RuntimeUnavailableError, InvalidInputError):
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception classes
        raise ModelDirectoryError(f"{path}: ONNX Runtime could not load it ({exc}); re-export the model",
                                  field="model") from exc


def check_ort_options(ort_options: object) -> dict[str, str]:
    """Validate ``ort_options`` (a mapping of str to str) before any session is built."""
    if ort_options is None:
        return {}
    if not isinstance(ort_options, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in ort_options.items()):
        raise InvalidInputError("ort_options: pass a mapping of ONNX Runtime session config keys to string "
                                'values, e.g. {"session.intra_op.allow_spinning": "0"}', field="ort_options")
    return dict(ort_options)


def run(session, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``session`` and return ``outputs``; drops feeds the graph does not declare."""
    names = {i.name for i in session.get_inputs()}
    return session.run(outputs, {k: v for k, v in feeds.items() if k in names})


# ---- the facade's model: resolve, load, batch, run ------------------------------------------------------
DEFAULT_BATCH_TOKENS = 16384  # rows × longest per decoder run: bounds activation memory, keeps GEMMs large
DEFAULT_MAX_BATCH_SIZE = 64


def cache_dir() -> Path:
    """Where raw checkpoints are exported once: $VLRANK_CACHE, else ~/.cache/vlrank."""
    import os

    return Path(os.environ.get("VLRANK_CACHE") or Path.home() / ".cache" / "vlrank")


def resolve_model_dir(model: str | Path, *, task: str) -> Path:
    """An exported directory as is; a checkpoint directory or hub id exported once into the cache,
    keyed by a hash of the checkpoint's files (a changed checkpoint gets a fresh export)."""
    import os
    import shutil
    import tempfile

    from vlrank.export import export, resolve_checkpoint
    from vlrank.export.checkpoint import checkpoint_hash
    from vlrank.export.manifest import MANIFEST

    if not isinstance(model, (str, Path)) or not str(model):
        raise InvalidInputError("model: pass an exported model directory, a checkpoint directory or a hub id",
                                field="model")
    path = Path(model).expanduser()
    if (path / MANIFEST).is_file():
        return path
    src = resolve_checkpoint(model)
    if (src / MANIFEST).is_file():
        return src
    key = checkpoint_hash(src)[:20]
    target = cache_dir() / f"{key}-{task}"
    if (target / MANIFEST).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    name = str(model) if not path.exists() else src.resolve().name
    # Export beside the target, then rename: a crashed or concurrent export never leaves a half directory.
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        export(src, tmp, task=task, progress=True, name=name)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: use its export
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


_TOKENIZERS: dict[tuple[str, int, int], object] = {}


def load_tokenizer(path: Path):
    """The native tokenizer of ``path``, parsed once per process (a Qwen tokenizer.json is 18 MB and
    takes ~1.5 s to load; facades on the same model share it — it is immutable)."""
    from vlrank import _native

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    tok = _TOKENIZERS.get(key)
    if tok is None:
        tok = _native.Tokenizer.from_file(str(path))
        _TOKENIZERS[key] = tok
    return tok


class Row:
    """One decoder row: prompt ids plus the prepared images whose pads it holds (in order)."""

    __slots__ = ("ids", "images")

    def __init__(self, ids: list[int], images: list | None = None) -> None:
        self.ids = ids
        self.images = images or []


class ModelRunner:
    """An exported model ready to run: manifest, tokenizer, decoder (and vision tower) sessions.

    ``run(rows, image_batch)`` plans token-budgeted batches with the native planner (length-sorted),
    right-pads them, feeds image features when the rows have images, and returns the decoder output of
    every row in input order. Right padding never changes a row's result (see export/decoder.py).
    """

    def __init__(self, model: str | Path, *, task: str, providers=None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, ort_options: Mapping[str, str] | None = None) -> None:
        from vlrank.export.manifest import read_manifest

        for value, fld in ((batch_tokens, "batch_tokens"), (max_batch_size, "max_batch_size")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{fld}={value!r}; pass a positive integer", field=fld)
        self.dir = resolve_model_dir(model, task=task)
        self.manifest = read_manifest(self.dir)
        if self.manifest.task != task:
            raise ModelDirectoryError(
                f"{self.dir} is a '{self.manifest.task}' model; use vlrank."
                f"{'Reranker' if self.manifest.task == 'rerank' else 'Embedder'} for it, or export the checkpoint "
                f"with task='{task}'",
                field="model",
            )
        self.providers = providers
        self.ort_options = check_ort_options(ort_options)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.tokenizer = load_tokenizer(self.manifest.file("tokenizer"))
        self.session = create_session(self.manifest.file("decoder"), providers=providers,
                                      ort_options=self.ort_options)
        self.output = self.manifest.data["decoder"]["output"]
        self.family = self.manifest.family
        self.pad_id = int(self.manifest.special.get("endoftext", 151643))
        self.image_pad_id = self.manifest.special.get("image_pad")
        dims = self.manifest.data["dims"]
        self.hidden = int(dims["hidden_size"])
        self.deepstack = int(dims.get("deepstack_layers", 0))
        self._tower = None

    @property
    def has_vision(self) -> bool:
        return "vision" in self.manifest.data["files"]

    def tower(self):
        """The vision tower (loaded on first use)."""
        if self._tower is None:
            if not self.has_vision:
                raise ModelDirectoryError(f"{self.dir} has no vision graph; this model takes text only "
                                          "(re-export a Qwen3-VL checkpoint with this vlrank)", field="model")
            from vlrank.multimodal import VisionTower

            self._tower = VisionTower(self.dir, providers=self.providers, ort_options=self.ort_options)
        return self._tower

    def image_batch(self, *, min_pixels: int, max_pixels: int):
        """A per-call image cache (each distinct image preprocessed and encoded once), or None for a
        text-only model."""
        if not self.has_vision:
            return None
        from vlrank.multimodal import ImageBatch

        return ImageBatch(self.tower(), min_pixels=min_pixels, max_pixels=max_pixels)

    def run_calls(self, prepared: list, image_batch, result: Callable[[Any, np.ndarray], dict]) -> list:
        """The rows of many prepared calls (objects with ``.rows``) through ONE batch plan; ``result(call,
        outputs)`` builds each call's answer. A call that failed to prepare keeps its error in place, so
        one bad request never fails the others (the server packs many requests this way)."""
        rows = [row for p in prepared if not isinstance(p, VlrankError) for row in p.rows]
        outputs = self.run(rows, image_batch)
        results: list = []
        offset = 0
        for p in prepared:
            if isinstance(p, VlrankError):
                results.append(p)
                continue
            results.append(result(p, outputs[offset : offset + len(p.rows)]))
            offset += len(p.rows)
        return results

    def run(self, rows: list[Row], image_batch=None) -> np.ndarray:
        from vlrank import _native

        if not rows:
            return np.zeros((0,), np.float32)
        lengths = [len(r.ids) for r in rows]
        plan = _native.plan_batches(lengths, max_batch_size=self.max_batch_size, token_budget=self.batch_tokens)
        results: list[np.ndarray | None] = [None] * len(rows)
        vl = self.family == "qwen3_vl"
        for batch in plan:
            idx = [int(i) for i in batch]
            batch_rows = [rows[i] for i in idx]
            positions = None
            if vl:
                positions = [self._positions(r, image_batch) for r in batch_rows]
            input_ids, mask, pos = _native.pad_batch([r.ids for r in batch_rows], pad_id=self.pad_id,
                                                     positions=positions)
            feeds = {"input_ids": input_ids, "attention_mask": mask}
            if vl:
                feeds["position_ids"] = pos
                images = [img for r in batch_rows for img in r.images]
                if images:
                    feeds["image_embeds"], feeds["deepstack_embeds"] = image_batch.features(images)
                else:
                    feeds["image_embeds"] = np.zeros((0, self.hidden), np.float32)
                    feeds["deepstack_embeds"] = np.zeros((self.deepstack, 0, self.hidden), np.float32)
            else:
                # Text Qwen3: positions 0..L-1 (padding positions are masked out; their value is irrelevant).
                feeds["position_ids"] = np.broadcast_to(np.arange(input_ids.shape[1], dtype=np.int64),
                                                        input_ids.shape).copy()
            out = self.session.run([self.output], feeds)[0]
            if not np.all(np.isfinite(out)):
                raise RuntimeUnavailableError(
                    "the model produced non-finite outputs (NaN/inf); the exported weights may be corrupt — "
                    "re-export the model", field="model")
            for j, i in enumerate(idx):
                results[i] = out[j]
        return np.stack(results)

    def _positions(self, row: Row, image_batch) -> np.ndarray:
        if row.images:
            return image_batch.positions(row.ids, row.images, image_pad_id=self.image_pad_id)
        return np.broadcast_to(np.arange(len(row.ids), dtype=np.int64), (3, len(row.ids))).copy()
