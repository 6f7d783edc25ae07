"""The OpenAPI document names the models this server serves: every request example's ``"model"`` is a
served id of the right kind (a reranker for the rerank / score routes, an embedding model for
/v1/embeddings), so an example copied from /docs works against this server as it is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from .engines import EMBED, RERANK
from .models import ModelSpec, kind_of

# Request schema name -> the kind of model its examples name.
EXAMPLE_KINDS = {"RerankRequest": RERANK, "CohereV2RerankRequest": RERANK, "ScoreRequest": RERANK,
                 "EmbeddingRequest": EMBED, "CohereEmbedRequest": EMBED}


def served_ids(models: Mapping[str, Any]) -> dict[str, str]:
    """{kind: the first served id of that kind} (kinds of ModelSpecs without one are left out)."""
    out: dict[str, str] = {}
    for name, model in models.items():
        kind = model.kind if isinstance(model, ModelSpec) else kind_of(model)
        if kind is not None:
            out.setdefault(kind, name)
    return out


def name_served_models(app: FastAPI, models: Mapping[str, Any]) -> None:
    """Rewrite the request examples of ``app``'s OpenAPI document to use the served model ids."""
    ids = served_ids(models)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for name, kind in EXAMPLE_KINDS.items():
                component = schema.get("components", {}).get("schemas", {}).get(name, {})
                for example in component.get("examples", []):
                    if kind in ids and isinstance(example, dict):
                        example["model"] = ids[kind]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
