"""The server's shared state: model lifecycle (load, warm-up, drain), the per-model scheduler and engine, the
media budget, and the model lookup every route uses (the serve step itself is ``route.py``).

Shutdown: uvicorn stops accepting connections and tells every open one (``protocol.py`` then calls
``begin_drain``); /health answers 503 ``shutting_down`` and queued requests keep running for up to
``drain_timeout_s``. At that deadline every request still waiting or running is answered with the JSON 503
``shutting_down`` and ``Retry-After`` (clients retry on another replica), and no further model batch
starts. Never a plain-text 500: uvicorn's own cancellation, later, finds nothing left to cancel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping
from typing import Any

from .engines import RERANK, MediaBudget, engine_class, is_warmup_refusal
from .errors import ApiError
from .metrics import Metrics
from .models import ModelSpec, ServedModel
from .scheduler import BatchScheduler, SchedulerClosedError
from .settings import ServerSettings

log = logging.getLogger("vlrank.server")

LOADING, READY, FAILED, STOPPING = "loading", "ok", "failed", "shutting_down"


class ServerState:
    """Everything the routes share: settings, metrics, served models, readiness."""

    def __init__(self, specs: Mapping[str, Any], settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.specs = dict(specs)
        self.models: dict[str, ServedModel] = {}
        self.status = LOADING
        # Per model: loading / ok / failed / shutting_down. /health shows these and the names only: load
        # errors carry paths and ONNX Runtime text, which go to the server log, never to a client.
        self.model_states: dict[str, str] = {name: LOADING for name in self.specs}
        self.policy = settings.fetch_policy()
        # One budget for the decoded pixel rows of every prepared request of every model (engines.py).
        self.media = MediaBudget(settings.max_media_bytes, wait_s=settings.media_wait_s)
        # Requests with images or videos are prepared here (route.py): at most media_workers decode at once, each
        # at nice +MEDIA_NICE, so the model thread (nice 0) keeps its cores while a video decodes.
        self.media_pool = ThreadPoolExecutor(max_workers=settings.media_workers, thread_name_prefix="vlrank-media",
                                             initializer=_lower_priority)
        self.drain_deadline: float | None = None  # monotonic time; set when shutdown begins
        self._drain_timer: asyncio.TimerHandle | None = None

    @property
    def draining(self) -> bool:
        return self.drain_deadline is not None

    # ---- lifecycle -------------------------------------------------------------------------------
    async def load_all(self) -> None:
        """Load (in threads) and warm up every model; READY when all are, FAILED on the first error."""
        name = ""
        try:
            for name, spec in self.specs.items():
                model = spec
                if isinstance(spec, ModelSpec):
                    log.info("loading model %r", name)
                    model = await asyncio.to_thread(spec.loader)
                served = self._serve(name, model)
                self.models[name] = served
                if self.settings.warmup:
                    await self._warm_up(served)
                self.model_states[name] = READY
                log.info("model %r ready (%s)", name, served.kind)
            if self.status == LOADING:
                self.status = READY
                self.metrics.ready.set(1)
        except Exception:  # noqa: BLE001 - reported by /health (state only) and the log, not raised into uvicorn
            log.exception("loading model %r failed", name)
            self.status = FAILED
            self.model_states[name] = FAILED

    def _serve(self, name: str, model: Any) -> ServedModel:
        engine = engine_class(model)(name, model, policy=self.policy, max_documents=self.settings.max_documents,
                                     media=self.media)
        m = self.metrics
        scheduler = BatchScheduler(
            name,
            engine.run_batch,
            max_queue=self.settings.max_queue,
            max_batch_cost=self.settings.max_batch_tokens,
            max_batch_jobs=self.settings.max_batch_requests,
            on_batch=lambda jobs, items, secs: (m.batch_requests.labels(name).observe(jobs),
                                                m.batch_items.labels(name).observe(items),
                                                m.batch_seconds.labels(name).observe(secs)),
            on_depth=lambda depth: m.queue_depth.labels(name).set(depth),
        )
        scheduler.start()
        return ServedModel(name=name, kind=engine.kind, engine=engine, scheduler=scheduler)

    async def _warm_up(self, served: ServedModel) -> None:
        for call in served.engine.warmup_calls():
            try:
                prepared = await asyncio.to_thread(served.engine.prepare, [call])
                try:
                    job = served.scheduler.submit(prepared, cost=prepared.cost)
                    await job.future
                finally:
                    prepared.release()
            except Exception as exc:
                if not is_warmup_refusal(exc):
                    raise

    def begin_drain(self) -> None:
        """Shutdown has begun (idempotent; call on the event loop): /health turns 503, queued work gets
        ``drain_timeout_s`` to finish, then ``expire_drain`` answers the rest."""
        if self.drain_deadline is not None:
            return
        self.metrics.ready.set(0)
        self.drain_deadline = time.monotonic() + self.settings.drain_timeout_s
        log.info("shutting down: queued requests have %.3g s to finish", self.settings.drain_timeout_s)
        self._drain_timer = asyncio.get_running_loop().call_later(self.settings.drain_timeout_s, self.expire_drain)

    def expire_drain(self) -> None:
        """The drain deadline passed: answer every waiting and running request with the JSON 503."""
        self.status = STOPPING
        limit = self.settings.drain_timeout_s
        for served in self.models.values():
            name = served.name
            answered = served.scheduler.expire(lambda name=name: SchedulerClosedError(
                f"model {name!r} is shutting down and the {limit:g} s drain deadline passed before this request "
                "was answered"))
            if answered:
                log.warning("model %r: %d request(s) answered 503 at the drain deadline", name, answered)

    async def drain(self) -> None:
        """The lifespan's end: close every scheduler and wait for it until the drain deadline."""
        self.begin_drain()
        for served in self.models.values():
            served.scheduler.close()
        for served in self.models.values():
            left = max(0.0, (self.drain_deadline or 0.0) - time.monotonic())
            if not await asyncio.to_thread(served.scheduler.join, left):
                self.expire_drain()  # the model thread is a daemon: a batch still running ends with the process
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self.status = STOPPING
        self.model_states = {name: STOPPING if state == READY else state
                             for name, state in self.model_states.items()}
        self.media_pool.shutdown(wait=False, cancel_futures=True)

    def shutting_down(self) -> ApiError:
        return ApiError(503, "the server is shutting down; retry on another replica", code="shutting_down",
                        headers=self.retry_headers())

    # ---- request helpers -------------------------------------------------------------------------
    def retry_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.settings.retry_after_s)}

    def model(self, name: str, kind: str) -> ServedModel:
        if self.status != READY:
            if name in self.specs and self.status in (LOADING, STOPPING):
                what = "is still loading" if self.status == LOADING else "is shutting down"
                raise ApiError(503, f"model {name!r} {what}; retry shortly", code="model_not_ready",
                               headers=self.retry_headers())
            if self.status == FAILED:
                raise ApiError(503, "the server failed to load its models; see the server log",
                               code="model_load_failed", headers=self.retry_headers())
        served = self.models.get(name)
        if served is None:
            known = ", ".join(sorted(self.specs)) or "none"
            raise ApiError(404, f"model {name!r} is not served here (served: {known}); see GET /v1/models",
                           param="model", code="model_not_found")
        if served.kind != kind:
            route = "/v1/rerank" if served.kind == RERANK else "/v1/embeddings"
            what = "reranker" if served.kind == RERANK else "embedding model"
            raise ApiError(400, f"model {name!r} is a {what}; send it to {route}",
                           param="model", code="model_not_supported")
        return served


#: CPU niceness of the media pool's threads (and of the FFmpeg threads they start, which inherit it): media
#: preparation yields the cores to the model thread. Measured on the 2-core dev machine (loaded, see notes).
MEDIA_NICE = 10


def _lower_priority() -> None:
    """Run this pool thread at nice +MEDIA_NICE (Linux sets niceness per thread); elsewhere, as it is."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MEDIA_NICE)
    except (AttributeError, OSError):  # not Linux, or not permitted: the pool still bounds concurrency
        pass
