"""Which models a server serves: kind detection, loading from exported directories, served entries."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlrank.errors import InvalidInputError, ModelDirectoryError
from vlrank.inputs import FetchPolicy

from .engines import EMBED, RERANK, EmbedEngine, RerankEngine
from .scheduler import BatchScheduler

MANIFEST = "vlrank.json"


@dataclass(frozen=True)
class ModelSpec:
    """A model to load when the server starts (so /health can answer 503 meanwhile).

    ``loader`` returns a facade object; ``kind`` ("rerank" | "embed") is known beforehand from the
    manifest, or left None to be read from the loaded object.
    """

    loader: Callable[[], Any]
    kind: str | None = None


def kind_of(model: Any) -> str:
    """"rerank" for an object with ``rerank()``, "embed" for one with ``embed()``."""
    if callable(getattr(model, "rerank", None)):
        return RERANK
    if callable(getattr(model, "embed", None)):
        return EMBED
    raise InvalidInputError(
        f"models: a {type(model).__name__} has neither rerank() nor embed(); pass a vlrank.Reranker, a "
        "vlrank.Embedder or a ModelSpec", field="models")


def manifest_task(path: str | Path) -> str:
    """The task ("rerank" | "embed") an exported model directory was built for (its vlrank.json)."""
    root = Path(path)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise ModelDirectoryError(
            f"{root}: no {MANIFEST}; serve an exported model directory (vlrank export CHECKPOINT OUT_DIR "
            "--task rerank|embed)", field="model")
    try:
        task = json.loads(manifest.read_text(encoding="utf-8")).get("task")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ModelDirectoryError(f"{manifest}: unreadable ({exc}); re-export the model", field="model") from exc
    if task not in (RERANK, EMBED):
        raise ModelDirectoryError(f"{manifest}: task {task!r} is not 'rerank' or 'embed'; re-export the model",
                                  field="model")
    return task


def facade_kwargs(cls: Any, *, name: str, policy: FetchPolicy) -> dict[str, Any]:
    """Keyword arguments the facade class accepts among the ones the server wants to set."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    # ORT's spinning intra-op threads would burn the cores the event loop needs between batches
    # (docs/design.md "Server hooks" 5: 2-4x throughput at concurrency 32 on 2 cores without spinning).
    wanted = {"name": name, "fetch_policy": policy,
              "ort_options": {"session.intra_op.allow_spinning": "0"}}
    return {k: v for k, v in wanted.items() if k in params}


def spec_from_path(name: str, path: str | Path, *, policy: FetchPolicy) -> ModelSpec:
    """A ModelSpec that builds ``vlrank.Reranker`` / ``vlrank.Embedder`` from an exported directory."""
    kind = manifest_task(path)

    def load() -> Any:
        import vlrank

        cls = vlrank.Reranker if kind == RERANK else vlrank.Embedder
        return cls(str(path), **facade_kwargs(cls, name=name, policy=policy))

    return ModelSpec(loader=load, kind=kind)


@dataclass(eq=False)
class ServedModel:
    """One loaded, scheduled model."""

    name: str
    kind: str
    engine: RerankEngine | EmbedEngine
    scheduler: BatchScheduler
    created: int = field(default_factory=lambda: int(time.time()))
