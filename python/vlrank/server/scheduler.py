"""Per-model batching across requests: a FIFO queue and one worker thread that owns the model.

Why a thread and not a task: the model call blocks for milliseconds to seconds and ONNX Runtime releases
the GIL, so running it on a dedicated thread keeps the event loop answering (health, metrics, other
models) while the model computes. Why *one* thread per model: the facade is not promised to be
re-entrant, and one owner means batches never compete for the same cores.

Packing ("continuous batching"): whenever the worker is free it takes the waiting jobs from the head of
the queue, in arrival order, while their estimated cost fits ``max_batch_cost`` (a job larger than the
budget runs alone) and at most ``max_batch_jobs``. It never skips ahead of a job that does not fit, so
no request can starve behind later, smaller ones. There is no artificial wait: requests that arrive
while a batch runs form the next batch, so batching grows with load and costs nothing when idle.

Results go back to each request's future on its event loop. A job whose client left before it started
is dropped (``cancel``); a started job runs to the end and its result is discarded. ``close()`` stops
new submissions and lets the worker finish everything already queued (drain on shutdown);
``expire(make_error)`` ends a drain at its deadline: every waiting job and every running one is answered
with ``make_error()`` at once, and the worker starts no further batch (a running batch cannot be
interrupted inside ONNX Runtime; its result is discarded).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("vlrank.server")

QUEUED, RUNNING, CANCELLED, DONE = "queued", "running", "cancelled", "done"


class QueueFullError(Exception):
    """The model's queue holds ``max_queue`` waiting jobs already."""


class SchedulerClosedError(Exception):
    """The scheduler is shutting down and takes no new work."""


@dataclass(eq=False)
class Job:
    """One request's work: ``payload`` for the batch function, ``cost`` in (estimated) tokens."""

    payload: Any
    cost: int
    items: int
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    enqueued_at: float = field(default_factory=time.monotonic)
    state: str = QUEUED


BatchFn = Callable[[Sequence[Any]], Sequence[Any]]
"""Runs one batch: payloads in, one result (or an Exception instance) per payload out, same order."""


class BatchScheduler:
    """FIFO, cost-budgeted batching of jobs onto one worker thread (see the module docstring)."""

    def __init__(
        self,
        name: str,
        run_batch: BatchFn,
        *,
        max_queue: int = 256,
        max_batch_cost: int = 16384,
        max_batch_jobs: int = 64,
        on_batch: Callable[[int, int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self._run_batch = run_batch
        self.max_queue = max_queue
        self.max_batch_cost = max_batch_cost
        self.max_batch_jobs = max_batch_jobs
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._running = 0
        self._running_jobs: list[Job] = []
        self._thread = threading.Thread(target=self._worker, name=f"vlrank-model-{name}", daemon=True)
        self._started = False

    # ---- event-loop side -------------------------------------------------------------------------
    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def submit(self, payload: Any, *, cost: int, items: int = 1,
               loop: asyncio.AbstractEventLoop | None = None) -> Job:
        """Queue one job and return it; await ``job.future`` for its result.

        Raises ``QueueFullError`` when ``max_queue`` jobs are waiting and ``SchedulerClosedError`` after
        ``close()``. Call from the event loop that will await the future.
        """
        loop = loop or asyncio.get_running_loop()
        job = Job(payload=payload, cost=max(1, int(cost)), items=items, future=loop.create_future(), loop=loop)
        with self._cond:
            if self._closing:
                raise SchedulerClosedError(f"model {self.name!r} is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"model {self.name!r} has {len(self._queue)} requests waiting")
            self._queue.append(job)
            depth = len(self._queue)
            self._cond.notify()
        self._depth(depth)
        return job

    def cancel(self, job: Job) -> bool:
        """Drop a job that has not started; True if it was dropped (False: running or finished)."""
        with self._cond:
            if job.state != QUEUED:
                return False
            job.state = CANCELLED
            try:
                self._queue.remove(job)
            except ValueError:
                pass
            depth = len(self._queue)
        if not job.future.done():
            job.future.cancel()
        self._depth(depth)
        return True

    async def run(self, payload: Any, *, cost: int, items: int = 1) -> Any:
        """Submit and wait; if the awaiting task is cancelled, a job not yet started is dropped."""
        job = self.submit(payload, cost=cost, items=items)
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            self.cancel(job)
            raise

    @property
    def depth(self) -> int:
        """Jobs waiting (not running)."""
        with self._cond:
            return len(self._queue)

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._queue) or self._running > 0

    def close(self) -> None:
        """Take no new jobs; the worker finishes the queued ones and exits."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def expire(self, make_error: Callable[[], BaseException]) -> int:
        """Close, then answer every queued and running job with ``make_error()`` now; how many were answered.
        Call from the event loop thread (the futures' loop)."""
        with self._cond:
            self._closing = True
            waiting = list(self._queue)
            self._queue.clear()
            for job in waiting:
                job.state = CANCELLED
            running = list(self._running_jobs)
            self._cond.notify_all()
        answered = 0
        for job in waiting + running:
            if not job.future.done():
                job.future.set_exception(make_error())
                answered += 1
        self._depth(0)
        return answered

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to drain and exit; True when it has."""
        if self._started:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # ---- worker side -----------------------------------------------------------------------------
    def _take_batch(self) -> list[Job] | None:
        """Block for work; the next FIFO batch, or None when closed and drained."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            batch: list[Job] = []
            cost = 0
            while self._queue and len(batch) < self.max_batch_jobs:
                job = self._queue[0]
                if batch and cost + job.cost > self.max_batch_cost:
                    break  # never skip ahead: the head job goes first next time (no starvation)
                self._queue.popleft()
                job.state = RUNNING
                batch.append(job)
                cost += job.cost
            self._running = len(batch)
            self._running_jobs = batch
            depth = len(self._queue)
        self._depth(depth)
        return batch

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            t0 = time.perf_counter()
            try:
                results = list(self._run_batch([job.payload for job in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} jobs")
            except BaseException as exc:  # noqa: BLE001 - every job must get an answer, whatever happened
                log.exception("model %r: batch of %d failed", self.name, len(batch))
                results = [exc] * len(batch)
            elapsed = time.perf_counter() - t0
            with self._cond:
                self._running = 0
                self._running_jobs = []
                for job in batch:
                    job.state = DONE
            for job, result in zip(batch, results):
                _deliver(job, result)
                job.payload = None  # a prepared request's pixel rows go now, not when the next batch comes
            del results
            if self._on_batch is not None:
                try:
                    self._on_batch(len(batch), sum(job.items for job in batch), elapsed)
                except Exception:  # noqa: BLE001 - metrics must never break serving
                    log.exception("batch metrics callback failed")

    def _depth(self, depth: int) -> None:
        if self._on_depth is not None:
            try:
                self._on_depth(depth)
            except Exception:  # noqa: BLE001
                log.exception("queue depth callback failed")


def _deliver(job: Job, result: Any) -> None:
    def settle() -> None:
        if job.future.done():  # the client left, or the request was cancelled meanwhile
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody waits for this result any more
        pass
