"""Which models a server serves: kind detection, loading from an exported directory, a checkpoint directory
or a hub id (exported on first use), served entries."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlrank.engine.export_cache import checkpoint_task
from vlrank.engine.manifest import read_manifest
from vlrank.errors import ModelDirectoryError
from vlrank.inputs import FetchPolicy
from vlrank.modeldir import MANIFEST
from vlrank.preprocess.images import DEFAULT_MAX_IMAGE_PIXELS
from vlrank.tasks import Embedder, Reranker

from .engines import RERANK, TaskEngine, engine_class
from .scheduler import BatchScheduler

# ORT's spinning intra-op threads would burn the cores the event loop needs between batches (measured:
# 2-4x throughput at concurrency 32 on 2 cores without spinning; docs/notes.md).
SERVER_ORT_OPTIONS = {"session.intra_op.allow_spinning": "0"}


@dataclass(frozen=True)
class ModelSpec:
    """A model to load when the server starts (so /health can answer 503 meanwhile).

    ``loader`` returns a facade object; ``kind`` ("rerank" | "embed") is known beforehand from the
    manifest, or left None to be read from the loaded object.
    """

    loader: Callable[[], Any]
    kind: str | None = None


def kind_of(model: Any) -> str:
    """"rerank" for a ``vlrank.Reranker``, "embed" for a ``vlrank.Embedder``."""
    return engine_class(model).kind


def manifest_task(path: str | Path) -> str:
    """The task ("rerank" | "embed") an exported model directory was built for (its vlrank.json)."""
    return read_manifest(path).task


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """How the server loads every model it serves (``vlrank serve`` flags of the same names): the facade
    keywords ``max_length``, ``min_pixels`` / ``max_pixels``, ``providers``, ``threads`` (ORT intra-op), and
    the export options ``dtype`` / ``precision`` / ``quantize`` for a checkpoint or hub id exported on first
    use. None leaves the facade's default."""

    providers: str | None = None
    max_length: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    threads: int | None = None
    dtype: str | None = None
    precision: str | None = None
    quantize: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


def facade_kwargs(*, name: str, policy: FetchPolicy, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                  options: LoadOptions | None = None) -> dict[str, Any]:
    """The keyword arguments the server gives every task object it loads."""
    return {"name": name, "fetch_policy": policy, "ort_options": dict(SERVER_ORT_OPTIONS),
            "max_image_pixels": max_image_pixels, **(options.kwargs() if options else {})}


def spec_from_path(name: str, path: str | Path, *, policy: FetchPolicy,
                   max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, options: LoadOptions | None = None,
                   task: str | None = None) -> ModelSpec:
    """A ModelSpec that builds ``vlrank.Reranker`` / ``vlrank.Embedder`` from an exported directory, a
    checkpoint directory or a hub id, as the library does (one way to name a model everywhere).

    An exported directory's kind comes from its vlrank.json and a local checkpoint's from its config and name,
    both now (a wrong path fails before the port is bound); a hub id is downloaded and exported when the
    model loads (in the background, /health answering 503 meanwhile). ``task`` ("rerank" | "embed") names
    the task of a checkpoint whose config and name cannot tell it (``vlrank serve --task NAME=TASK``)."""
    local = Path(path).expanduser()
    kind: str | None = None
    if (local / MANIFEST).is_file():
        kind = manifest_task(local)
    elif local.exists():
        kind = checkpoint_task(local, task=task)
    elif str(path).count("/") != 1 or str(path).startswith((".", "/", "~")):  # resolve_checkpoint's hub-id form
        raise ModelDirectoryError(
            f"--model {name}={path}: no such directory, and not a hub id (owner/name); pass an exported "
            "model directory, a checkpoint directory or a hub id such as Qwen/Qwen3-VL-Reranker-2B",
            field="model")

    def load() -> Any:
        cls = Reranker if (kind or checkpoint_task(path, task=task)) == RERANK else Embedder
        return cls(str(path), **facade_kwargs(name=name, policy=policy, max_image_pixels=max_image_pixels,
                                              options=options))

    return ModelSpec(loader=load, kind=kind)


@dataclass(eq=False)
class ServedModel:
    """One loaded, scheduled model."""

    name: str
    kind: str
    engine: TaskEngine
    scheduler: BatchScheduler
    created: int = field(default_factory=lambda: int(time.time()))
