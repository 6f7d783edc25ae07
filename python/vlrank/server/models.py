"""Which models a server serves: kind detection, loading from exported directories, served entries."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlrank.engine.manifest import read_manifest
from vlrank.inputs import FetchPolicy
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


def facade_kwargs(*, name: str, policy: FetchPolicy,
                  max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> dict[str, Any]:
    """The keyword arguments the server gives every task object it loads."""
    return {"name": name, "fetch_policy": policy, "ort_options": dict(SERVER_ORT_OPTIONS),
            "max_image_pixels": max_image_pixels}


def spec_from_path(name: str, path: str | Path, *, policy: FetchPolicy,
                   max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ModelSpec:
    """A ModelSpec that builds ``vlrank.Reranker`` / ``vlrank.Embedder`` from an exported directory."""
    kind = manifest_task(path)

    def load() -> Any:
        cls = Reranker if kind == RERANK else Embedder
        return cls(str(path), **facade_kwargs(name=name, policy=policy, max_image_pixels=max_image_pixels))

    return ModelSpec(loader=load, kind=kind)


@dataclass(eq=False)
class ServedModel:
    """One loaded, scheduled model."""

    name: str
    kind: str
    engine: TaskEngine
    scheduler: BatchScheduler
    created: int = field(default_factory=lambda: int(time.time()))
