"""Tasks: the public model classes, side by side on one floor over ``tasks.base.Task``."""

from __future__ import annotations

from vlrank.tasks.embed import Embedder
from vlrank.tasks.rerank import Reranker

__all__ = ["Embedder", "Reranker"]
