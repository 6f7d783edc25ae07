"""The export cache: a checkpoint directory or hub id is exported once into ``$VLRANK_CACHE``
(default ``~/.cache/vlrank``), keyed by a hash of the checkpoint's files, the task and the export options
(``dtype``, ``precision``, ``quantize``): a float16 export and a float32 one of the same checkpoint are two
entries, and a changed checkpoint gets a fresh export."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vlrank.errors import InvalidInputError, ModelDirectoryError
from vlrank.modeldir import MANIFEST, read_manifest

# A first-use export that is still running after this many seconds says so on stderr (a download or an 8B
# export takes minutes; a tiny test checkpoint exports in under a second and prints nothing).
PROGRESS_AFTER_S = 2.0
_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """How a checkpoint is exported on first use (``vlrank.export``'s options of the same names).

    ``dtype`` None follows ``precision`` (a float16 graph stores float16 weights; float32 stores float32)."""

    dtype: str | None = None
    precision: str = "float32"
    quantize: str | None = None

    def __post_init__(self) -> None:
        for value, fld, allowed in ((self.dtype, "dtype", (None, *_DTYPES)),
                                    (self.precision, "precision", (*_DTYPES, "int8")),
                                    (self.quantize, "quantize", (None, "int8", "int4"))):
            if value not in allowed:
                shown = ", ".join(repr(a) for a in allowed)
                raise InvalidInputError(f"{fld}={value!r}; pass one of {shown}", field=fld)
        if self.precision == "int8" and self.quantize is None:
            raise InvalidInputError("precision='int8' multiplies int8 activations by quantized weights; pass "
                                    "quantize='int8' (or 'int4') with it", field="quantize")

    @property
    def storage(self) -> str:
        # int8 compute is a float32 graph around its integer GEMMs (export/quantize.py): float32 storage
        return self.dtype or ("float32" if self.precision == "int8" else self.precision)

    def key(self) -> str:
        """The options' part of a cache key: stable text, so equal options share one export."""
        return f"{self.storage}-{self.precision}-{self.quantize or 'noquant'}"


DEFAULT_EXPORT = ExportOptions()


def cache_dir() -> Path:
    """Where raw checkpoints are exported once: $VLRANK_CACHE, else ~/.cache/vlrank."""
    return Path(os.environ.get("VLRANK_CACHE") or Path.home() / ".cache" / "vlrank")


class _SlowNotice:
    """Prints one line on stderr when the work it guards outlives PROGRESS_AFTER_S, and its time at the end."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = time.monotonic()
        self.shown = False
        self.timer = threading.Timer(PROGRESS_AFTER_S, self._show)
        self.timer.daemon = True

    def _show(self) -> None:
        self.shown = True
        print(f"vlrank: {self.what} (first use; cached afterwards) ...", file=sys.stderr, flush=True)

    def __enter__(self) -> _SlowNotice:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
        if self.shown:
            state = "failed" if exc[0] is not None else "done"
            print(f"vlrank: {self.what}: {state} in {time.monotonic() - self.start:.1f} s", file=sys.stderr,
                  flush=True)


def resolve_model_dir(model: str | Path, *, task: str, options: ExportOptions | None = None) -> Path:
    """An exported directory as is; a checkpoint directory or hub id exported once into the cache with
    ``options``, keyed by a hash of the checkpoint's files, the task and the options."""
    if not isinstance(model, (str, Path)) or not str(model):
        raise InvalidInputError("model: pass an exported model directory, a checkpoint directory or a hub id",
                                field="model")
    options = options or DEFAULT_EXPORT
    path = Path(model).expanduser()
    if (path / MANIFEST).is_file():
        return path
    # Only a checkpoint imports the exporter: an exported directory needs none of it (onnx, the graph builders).
    from vlrank.export import export, resolve_checkpoint
    from vlrank.export.checkpoint import checkpoint_hash

    with _SlowNotice(f"downloading {model}"):
        src = resolve_checkpoint(model)
    if (src / MANIFEST).is_file():
        return src
    key = hashlib.sha256(f"{checkpoint_hash(src)}\0{task}\0{options.key()}".encode()).hexdigest()[:20]
    target = cache_dir() / f"{key}-{task}-{options.key()}"
    if (target / MANIFEST).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    name = str(model) if not path.exists() else src.resolve().name
    # Export beside the target, then rename: a crashed or concurrent export never leaves a half directory.
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        with _SlowNotice(f"exporting {name} ({task}, {options.key()}) into {target}"):
            export(src, tmp, task=task, progress=True, name=name, dtype=options.storage,
                   precision=options.precision, quantize=options.quantize)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: use its export
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def checkpoint_task(source: str | Path, *, task: str | None = None) -> str:
    """The task of a checkpoint directory or hub id (a hub id is downloaded): ``vlrank.export.infer_task``
    from its config and name — a Qwen3-Embedding (text) checkpoint or an ambiguous name is its error."""
    from vlrank.export import infer_task, resolve_checkpoint  # only a checkpoint needs the exporter
    from vlrank.export.checkpoint import open_checkpoint

    src = resolve_checkpoint(source)
    if (src / MANIFEST).is_file():
        return read_manifest(src).task
    if not (src / "config.json").is_file():
        raise ModelDirectoryError(
            f"{source}: neither an exported model directory (no {MANIFEST}) nor a checkpoint directory (no "
            "config.json); pass a directory made by `vlrank export`, a Hugging Face checkpoint directory or a "
            "hub id such as Qwen/Qwen3-VL-Reranker-2B", field="model")
    ckpt = open_checkpoint(src)
    try:
        label = str(source) if not Path(source).expanduser().exists() else ckpt.name
        return infer_task(ckpt, label, task)
    finally:
        ckpt.close()


__all__ = ["ExportOptions", "DEFAULT_EXPORT", "cache_dir", "resolve_model_dir", "checkpoint_task"]
