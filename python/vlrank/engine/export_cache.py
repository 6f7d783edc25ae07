"""The export cache: a checkpoint directory or hub id is exported once into ``$VLRANK_CACHE``
(default ``~/.cache/vlrank``), keyed by a hash of the checkpoint's files and the task."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from vlrank.errors import InvalidInputError
from vlrank.modeldir import MANIFEST


def cache_dir() -> Path:
    """Where raw checkpoints are exported once: $VLRANK_CACHE, else ~/.cache/vlrank."""
    return Path(os.environ.get("VLRANK_CACHE") or Path.home() / ".cache" / "vlrank")


def resolve_model_dir(model: str | Path, *, task: str) -> Path:
    """An exported directory as is; a checkpoint directory or hub id exported once into the cache,
    keyed by a hash of the checkpoint's files (a changed checkpoint gets a fresh export)."""
    if not isinstance(model, (str, Path)) or not str(model):
        raise InvalidInputError("model: pass an exported model directory, a checkpoint directory or a hub id",
                                field="model")
    path = Path(model).expanduser()
    if (path / MANIFEST).is_file():
        return path
    # Only a checkpoint imports the exporter: an exported directory needs none of it (onnx, the graph builders).
    from vlrank.export import export, resolve_checkpoint
    from vlrank.export.checkpoint import checkpoint_hash

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


__all__ = ["cache_dir", "resolve_model_dir"]
