"""Ray Serve: replicas of vlrank's HTTP API, each batching across the requests it holds.

Each replica builds the same FastAPI app as ``vlrank serve`` (``vlrank.server.create_app`` over the
exported directories), so the routes, errors, auth, limits and the per-model batch scheduler are the
server's own: requests that reach one replica together share model batches. A replica reports itself
started only once its models are loaded and warmed, so Serve routes nothing to a cold replica and a model
that fails to load fails the deployment instead of answering 503 forever.

    serve run config.yaml       # import_path: vlrank.ray.serve:build_app  (docs/ray.md)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from vlrank.errors import InvalidInputError
from vlrank.ray.errors import INSTALL_HINT, RayUnavailableError

DEPLOYMENT = "vlrank"
_READY, _FAILED = "ok", "failed"


def serve_app(*, models: Mapping[str, str | Path], num_replicas: int | str = 1, settings: Any = None,
              ray_actor_options: Mapping[str, Any] | None = None, max_ongoing_requests: int | None = None,
              name: str = DEPLOYMENT) -> Any:
    """A Ray Serve application (pass it to ``ray.serve.run``) serving ``models`` (id -> exported model
    directory on storage every node reads) on ``num_replicas`` replicas (or ``"auto"``).

    ``settings``: a ``vlrank.server.ServerSettings`` (auth, limits, batch budget) used by every replica.
    ``ray_actor_options``: per replica resources, e.g. ``{"num_cpus": 2}`` or ``{"num_gpus": 1}``.
    ``max_ongoing_requests`` (default: twice the settings' ``max_batch_requests``) is how many requests
    Serve hands one replica at once; the replica batches among those, so it must be at least the batch size.
    """
    serve = _import_serve()
    from vlrank.server import ServerSettings, manifest_task

    settings = settings if settings is not None else ServerSettings()
    if not isinstance(settings, ServerSettings):
        raise InvalidInputError("settings: pass a vlrank.server.ServerSettings or None", field="settings")
    if not isinstance(models, Mapping) or not models:
        raise InvalidInputError("models: pass {model id: exported model directory}, at least one", field="models")
    paths: dict[str, str] = {}
    for model_id, path in models.items():
        if not isinstance(model_id, str) or not model_id:
            raise InvalidInputError(f"models: the id {model_id!r} is not a non-empty string", field="models")
        manifest_task(path)  # an exported directory, checked here before any replica starts
        paths[model_id] = str(Path(path).expanduser().resolve())
    if max_ongoing_requests is None:
        max_ongoing_requests = 2 * settings.max_batch_requests
    deployment = serve.deployment(
        _replica_class(serve), name=name, num_replicas=num_replicas,
        ray_actor_options=dict(ray_actor_options or {"num_cpus": 1}),
        max_ongoing_requests=max_ongoing_requests)
    return deployment.bind(models=paths, settings=settings)


def build_app(args: Mapping[str, Any]) -> Any:
    """The application builder ``serve run`` / a Serve config file calls (``import_path:
    vlrank.ray.serve:build_app``) with the config's ``args``: ``models``, ``num_replicas``,
    ``ray_actor_options``, ``max_ongoing_requests`` and ``settings`` (a mapping of ``ServerSettings``
    fields; ``api_key`` defaults to $VLRANK_API_KEY where ``serve run`` runs)."""
    from vlrank.server import ServerSettings, api_key_from_env

    args = dict(args)
    fields = dict(args.pop("settings", None) or {})
    fields.setdefault("api_key", api_key_from_env())
    unknown = set(args) - {"models", "num_replicas", "ray_actor_options", "max_ongoing_requests", "name"}
    if unknown:
        raise InvalidInputError(f"args: unknown key(s) {sorted(unknown)}; pass models, num_replicas, "
                                "ray_actor_options, max_ongoing_requests, name, settings", field="args")
    try:
        settings = ServerSettings(**fields)
    except TypeError as exc:
        raise InvalidInputError(f"args.settings: {exc}; pass ServerSettings fields", field="settings") from exc
    return serve_app(settings=settings, **args)


def _import_serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise RayUnavailableError(f"vlrank.ray.serve_app needs Ray Serve; {INSTALL_HINT}", field="ray") from None
    return serve


_REPLICA: Any = None


def _replica_class(serve: Any) -> Any:
    """The ingress deployment class (made once: ``serve.ingress`` needs Ray Serve, imported on first use)."""
    global _REPLICA
    if _REPLICA is None:
        @serve.ingress()
        class VlrankReplica:
            """One replica: the ``vlrank serve`` app over the exported directories, built on the replica."""

            def __init__(self, *, models: Mapping[str, str], settings: Any) -> None:
                self._models, self._settings, self._app = dict(models), settings, None

            def __serve_build_asgi_app__(self) -> Any:
                self._app = build_replica_app(self._models, self._settings)
                return self._app

            def check_health(self) -> None:
                state = self._app.state.vlrank if self._app is not None else None
                if state is not None and state.status == _FAILED:
                    raise RuntimeError(f"vlrank replica: loading the models failed: {state.failure}")

        _REPLICA = VlrankReplica
    return _REPLICA


def build_replica_app(models: Mapping[str, str], settings: Any) -> Any:
    """``create_app`` over ``models`` as ``vlrank serve`` builds it, with a startup that ends when every
    model is loaded and warmed (and fails if one does not load)."""
    from vlrank.inputs import FetchPolicy
    from vlrank.server import create_app, spec_from_path

    policy = FetchPolicy(allow_local_files=False, allow_private_urls=settings.allow_private_urls)
    app = create_app({n: spec_from_path(n, p, policy=policy) for n, p in models.items()}, settings=settings)
    state = app.state.vlrank
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as value:
            while state.status not in (_READY, _FAILED):
                await asyncio.sleep(0.05)
            if state.status == _FAILED:
                raise RuntimeError(f"vlrank replica: loading the models failed: {state.failure}")
            yield value

    app.router.lifespan_context = lifespan
    return app
