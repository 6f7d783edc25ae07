"""vlrank's HTTP server (IONOS / OpenAI-compatible rerank and embeddings) with batching across requests.

    from vlrank.server import create_app, ServerSettings, uvicorn_options
    settings = ServerSettings(api_key="secret")
    app = create_app({"reranker": vlrank.Reranker("out/rr", name="reranker")}, settings=settings)
    # uvicorn.run(app, host="127.0.0.1", port=8000, **uvicorn_options(app, settings))
    #   (the header / keep-alive timeouts and the shutdown drain)   or: vlrank serve --model reranker=out/rr
"""

from __future__ import annotations

from .app import create_app
from .protocol import uvicorn_options
from .models import ModelSpec, ServedModel, kind_of, manifest_task, spec_from_path
from .scheduler import BatchScheduler, QueueFullError, SchedulerClosedError
from .settings import API_KEY_ENV, ServerSettings, api_key_from_env
from .state import ServerState

__all__ = [
    "create_app",
    "ServerSettings",
    "ServerState",
    "ModelSpec",
    "ServedModel",
    "BatchScheduler",
    "QueueFullError",
    "SchedulerClosedError",
    "kind_of",
    "manifest_task",
    "spec_from_path",
    "API_KEY_ENV",
    "api_key_from_env",
    "uvicorn_options",
]
