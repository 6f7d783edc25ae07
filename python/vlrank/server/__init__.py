"""vlrank's HTTP server (IONOS / OpenAI-compatible rerank and embeddings) with batching across requests.

    from vlrank.server import create_app, ServerSettings, uvicorn_options
    settings = ServerSettings(api_key="secret")
    app = create_app({"reranker": vlrank.Reranker("out/rr", name="reranker")}, settings=settings)
    # DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=8000, **uvicorn_options(app, settings))).run()
    #   (the header / keep-alive timeouts and the shutdown drain; uvicorn.run works too, without the adoption
    #   of connections still in the accept queue at shutdown)   or: vlrank serve --model reranker=out/rr
"""

from __future__ import annotations

from .app import create_app
from .protocol import DrainingServer, uvicorn_options
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
    "DrainingServer",
]
