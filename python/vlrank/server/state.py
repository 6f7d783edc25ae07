"""The server's shared state: model lifecycle (load, warm-up, drain), the per-model scheduler, and the
route helpers every endpoint module uses (prepare off or on the loop, execute, answer).

Shutdown: uvicorn stops accepting connections and tells every open one (``protocol.py`` then calls
``begin_drain``); /health answers 503 ``shutting_down`` and queued requests keep running for up to
``drain_timeout_s``. At that deadline every request still waiting or running is answered with the JSON 503
``shutting_down`` and ``Retry-After`` (clients retry on another replica), and no further model batch
starts. Never a plain-text 500: uvicorn's own cancellation, later, finds nothing left to cancel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vlrank.errors import VlrankError
from vlrank.inputs import holds_images

from .engines import RERANK, Prepared, engine_class, is_warmup_refusal
from .errors import ApiError, from_vlrank_error, internal_error
from .metrics import Metrics
from .models import ModelSpec, ServedModel
from .scheduler import BatchScheduler, QueueFullError, SchedulerClosedError
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
        engine = engine_class(model)(name, model, policy=self.policy, max_documents=self.settings.max_documents)
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
        for payload in served.engine.warmup_payloads():
            job = served.scheduler.submit(payload, cost=1)
            try:
                await job.future
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

    async def prepare(self, served: ServedModel, request: Request, **kwargs: Any) -> Prepared:
        """Validate and cost a request. Small text-only requests are parsed right here: that takes
        microseconds, while a hop to a worker thread costs a GIL hand-over (up to the 5 ms switch interval
        while the model thread runs Python code) - measured: it halved throughput at concurrency 32.
        Whether a request is text-only is read from its decoded fields (``holds_images``), never from the
        raw body, so no spelling of a URL can bring a fetch or a decode onto the event loop."""
        try:
            if _is_light(request) and not holds_images(*kwargs.values()):
                return served.engine.prepare(**kwargs)
            return await run_in_threadpool(lambda: served.engine.prepare(**kwargs))
        except VlrankError as exc:
            raise from_vlrank_error(exc) from exc

    async def execute(self, served: ServedModel, prepared: Prepared, request: Request) -> Any:
        """Queue the request on the model's scheduler and wait for its result or the client leaving."""
        try:
            job = served.scheduler.submit(prepared.payload, cost=prepared.cost, items=prepared.items)
        except QueueFullError as exc:
            self.metrics.rejected.labels(served.name).inc()
            raise ApiError(429, f"{exc}; retry after {self.settings.retry_after_s} s", code="queue_full",
                           headers=self.retry_headers()) from exc
        except SchedulerClosedError as exc:
            raise ApiError(503, f"{exc}; retry on another replica", code="shutting_down",
                           headers=self.retry_headers()) from exc
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._abandon(served, job)
            raise
        finally:
            gone.cancel()
        if not job.future.done():
            self._abandon(served, job)
            raise ClientGone()
        exc = job.future.exception()
        if exc is not None:
            if isinstance(exc, SchedulerClosedError):  # answered at the drain deadline
                raise ApiError(503, f"{exc}; retry on another replica", code="shutting_down",
                               headers=self.retry_headers()) from exc
            if isinstance(exc, VlrankError):
                raise from_vlrank_error(exc) from exc
            raise internal_error(exc) from exc
        result = job.future.result()
        usage = result.get("usage") if isinstance(result, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            self.metrics.tokens.labels(served.name).inc(usage["prompt_tokens"])
        return result

    def _abandon(self, served: ServedModel, job: Any) -> None:
        if served.scheduler.cancel(job):
            self.metrics.cancelled.labels(served.name).inc()
        else:  # already running: its result arrives later and nobody reads it
            job.future.add_done_callback(lambda f: f.cancelled() or f.exception())


_LIGHT_BODY_BYTES = 64 * 1024


def _is_light(request: Request) -> bool:
    """A body small enough to parse on the loop (a long document list still takes milliseconds)."""
    length = request.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= _LIGHT_BODY_BYTES


class ClientGone(Exception):
    """The client disconnected while its request waited."""


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so receive() only reports that)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return
        # A server may hand out one more empty body message after the body was read (uvicorn's httptools
        # protocol does); the next receive() then blocks. Yield anyway, so no server can make this spin.
        await asyncio.sleep(0)


async def unless_cancelled_in_shutdown(state: ServerState, work: Any) -> Response:
    """Run a route's work; if the server cancels it while shutting down (uvicorn's graceful-shutdown
    timeout, after the drain deadline), answer the JSON 503 instead of letting uvicorn send a plain 500."""
    try:
        return await work
    except asyncio.CancelledError:
        if not state.draining:
            raise
        return state.shutting_down().response()


async def answer(state: ServerState, served: ServedModel, prepared: Prepared, request: Request) -> Response:
    t0 = time.perf_counter()
    try:
        result = await state.execute(served, prepared, request)
    except ClientGone:
        log.info("client left before model %r answered (%.3f s)", served.name, time.perf_counter() - t0)
        return Response(status_code=499)
    return JSONResponse(result)
