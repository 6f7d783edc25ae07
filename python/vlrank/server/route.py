"""The one serve step every route runs; a route is two small adapters around it (request -> calls, results ->
its API's shape), the way TEI splits its router from its backends.

``serve(state, request, model=, kind=, calls=, shape=)``, in order:
  1. the model by name and kind (404 / 400 / 503 while loading or shutting down);
  2. the request's item count against ``max_documents`` (413 naming the route's field);
  3. prepare every call (engines.py): on the event loop for a small text-only body, else in a worker thread
     — media fetched, decoded, prompt ids built, the exact token cost known; typed errors -> 400 / 413 with
     ``param`` in the route's own field names; pixel rows reserved in the media budget (503 when it stays full);
  4. ONE scheduler job for the whole request (a 1,000-pair ``/score`` takes one queue slot, its cost in
     tokens), then its result or the client leaving (499; a job not started yet is dropped);
  5. the route's ``shape`` of the calls' results, as JSON.
A shutdown that cancels the route's task after the drain deadline answers the JSON 503, never uvicorn's 500.
(Auth, the body cap and metrics are middleware: they run before the body is parsed.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vlrank.errors import VlrankError
from vlrank.inputs import holds_images

from .engines import MediaBusyError, PreparedRequest, Rename
from .errors import ApiError, from_vlrank_error, internal_error
from .models import ServedModel
from .scheduler import QueueFullError, SchedulerClosedError
from .state import ServerState

log = logging.getLogger("vlrank.server")

Shape = Callable[[list[dict[str, Any]]], dict[str, Any]]
"""The calls' library results (in call order) -> the route's response body."""


class ClientGone(Exception):
    """The client disconnected while its request waited."""


async def serve(state: ServerState, request: Request, *, model: str, kind: str,
                calls: Sequence[Mapping[str, Any]], count: int, count_field: str, shape: Shape,
                rename: Rename | None = None, noun: str = "documents", count_code: str = "too_many_documents"
                ) -> Response:
    """Serve one request (see the module docstring). ``count``: the request's documents / inputs, checked
    against ``max_documents`` and named ``count_field`` in the 413; ``rename``: the library's field paths of
    call i -> the route's (e.g. /score's ``text_2[3]``)."""
    served = state.model(model, kind)
    limit = state.settings.max_documents
    if count > limit:
        raise ApiError(413, f"{count_field}: {count} {noun} is over this server's limit of {limit}; split the "
                            "request", param=count_field, code=count_code)

    async def work() -> Response:
        t0 = time.perf_counter()
        prepared = await _prepare(state, served, request, calls, rename)
        try:
            results = await _execute(state, served, prepared, request)
        except ClientGone:
            log.info("client left before model %r answered (%.3f s)", served.name, time.perf_counter() - t0)
            return Response(status_code=499)
        return JSONResponse(shape(results))

    return await _unless_cancelled_in_shutdown(state, work())


async def _prepare(state: ServerState, served: ServedModel, request: Request, calls: Sequence[Mapping[str, Any]],
                   rename: Rename | None) -> PreparedRequest:
    """Small text-only requests are prepared right on the loop: a hop to a worker thread costs a GIL hand-over
    (up to the 5 ms switch interval while the model thread runs Python code), which halved throughput at
    concurrency 32. Whether a request is text-only is read from its decoded fields (``holds_images``), never
    from the raw body, so no spelling of a URL brings a fetch or a decode onto the event loop. Requests with media go
    to the server's media pool (state.py): a few threads at a lower CPU priority than the model thread, so
    decoding a video slows the requests that wait for it, not the batches running beside it."""
    def prepare() -> PreparedRequest:
        return served.engine.prepare(calls, rename=rename)

    try:
        if holds_images(*(v for c in calls for v in c.values())):
            return await asyncio.get_running_loop().run_in_executor(state.media_pool, prepare)
        if _is_light(request):
            return prepare()
        return await run_in_threadpool(prepare)
    except VlrankError as exc:
        raise from_vlrank_error(exc) from exc
    except MemoryError as exc:  # the system refused a buffer while preparing: this request only
        raise ApiError(413, "preparing this request ran out of memory; send fewer or smaller images or videos",
                       code="out_of_memory") from exc
    except MediaBusyError as exc:
        raise ApiError(503, f"{exc}; retry after {state.settings.retry_after_s} s", code="media_budget_full",
                       headers=state.retry_headers()) from exc


async def _execute(state: ServerState, served: ServedModel, prepared: PreparedRequest,
                   request: Request) -> list[dict[str, Any]]:
    """Queue the request as one job and wait for its results or the client leaving. The request's media
    reservation is given back when the job is done (run, dropped, or answered at the drain deadline)."""
    try:
        job = served.scheduler.submit(prepared, cost=prepared.cost, items=prepared.items)
    except QueueFullError as exc:
        prepared.release()
        state.metrics.rejected.labels(served.name).inc()
        raise ApiError(429, f"{exc}; retry after {state.settings.retry_after_s} s", code="queue_full",
                       headers=state.retry_headers()) from exc
    except SchedulerClosedError as exc:
        prepared.release()
        raise ApiError(503, f"{exc}; retry on another replica", code="shutting_down",
                       headers=state.retry_headers()) from exc
    job.future.add_done_callback(lambda _: prepared.release())
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        _abandon(state, served, job)
        raise
    finally:
        gone.cancel()
    if not job.future.done():
        _abandon(state, served, job)
        raise ClientGone()
    exc = job.future.exception()
    if exc is not None:
        if isinstance(exc, SchedulerClosedError):  # answered at the drain deadline
            raise ApiError(503, f"{exc}; retry on another replica", code="shutting_down",
                           headers=state.retry_headers()) from exc
        if isinstance(exc, VlrankError):
            raise from_vlrank_error(exc) from exc
        if isinstance(exc, MemoryError):
            raise ApiError(413, "running this request ran out of memory; send fewer or smaller images or videos",
                           code="out_of_memory") from exc
        raise internal_error(exc) from exc
    results = job.future.result()
    tokens = sum(r["usage"]["prompt_tokens"] for r in results)
    state.metrics.tokens.labels(served.name).inc(tokens)
    return results


def _abandon(state: ServerState, served: ServedModel, job: Any) -> None:
    if served.scheduler.cancel(job):
        state.metrics.cancelled.labels(served.name).inc()
    else:  # already running: its result arrives later and nobody reads it
        job.future.add_done_callback(lambda f: f.cancelled() or f.exception())


_LIGHT_BODY_BYTES = 16 * 1024


def _is_light(request: Request) -> bool:
    """A body small enough to prepare on the loop: 16 KiB of text tokenises in ~1 ms (3,500 tokens, measured on the
    2-core dev machine under load), about what a thread hop costs; above it the hop is the cheaper wait."""
    length = request.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= _LIGHT_BODY_BYTES


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so receive() only reports that)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return
        # A server may hand out one more empty body message after the body was read (uvicorn's httptools
        # protocol does); the next receive() then blocks. Yield anyway, so no server can make this spin.
        await asyncio.sleep(0)


async def _unless_cancelled_in_shutdown(state: ServerState, work: Any) -> Response:
    """Run a route's work; if the server cancels it while shutting down (uvicorn's graceful-shutdown
    timeout, after the drain deadline), answer the JSON 503 instead of letting uvicorn send a plain 500."""
    try:
        return await work
    except asyncio.CancelledError:
        if not state.draining:
            raise
        return state.shutting_down().response()


__all__ = ["serve", "ClientGone", "Shape"]
