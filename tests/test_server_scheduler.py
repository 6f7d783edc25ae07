"""The per-model batching scheduler with a real batch function (no model): FIFO packing under a cost
budget, routing of results, per-job errors, queue limit, cancellation and draining."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlrank.server.scheduler import BatchScheduler, QueueFullError, SchedulerClosedError


class Recorder:
    """A batch function that squares numbers, records every batch and can be held closed by a gate."""

    def __init__(self, *, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, payloads):
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(payloads))
        return [ValueError(f"bad {p}") if p == self.fail_on else p * p for p in payloads]


def test_jobs_that_arrive_during_a_batch_form_the_next_batch_in_fifo_order():
    async def main():
        fn = Recorder()
        fn.gate.clear()
        s = BatchScheduler("m", fn, max_batch_jobs=4, max_batch_cost=1000)
        s.start()
        first = s.submit(0, cost=1)
        await asyncio.to_thread(fn.entered.wait, 5)  # the worker is now busy with job 0
        jobs = [s.submit(i, cost=1) for i in range(1, 10)]
        assert s.depth == 9
        fn.gate.set()
        results = await asyncio.gather(first.future, *(j.future for j in jobs))
        s.close()
        assert s.join(5)
        return fn.batches, results

    batches, results = asyncio.run(main())
    assert results == [i * i for i in range(10)]
    assert batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


def test_cost_budget_splits_batches_and_an_oversized_job_runs_alone_without_being_skipped():
    async def main():
        fn = Recorder()
        fn.gate.clear()
        s = BatchScheduler("m", fn, max_batch_jobs=100, max_batch_cost=10)
        s.start()
        head = s.submit(0, cost=1)
        await asyncio.to_thread(fn.entered.wait, 5)
        costs = {1: 4, 2: 4, 3: 50, 4: 1, 5: 1, 6: 9}
        jobs = [s.submit(i, cost=c) for i, c in costs.items()]
        fn.gate.set()
        await asyncio.gather(head.future, *(j.future for j in jobs))
        s.close()
        s.join(5)
        return fn.batches

    # 1+2 fit (8); 3 does not fit behind them and is not overtaken by 4/5; it runs alone (over budget);
    # then 4+5 (2) and 6 would make 11 > 10, so 6 goes last.
    assert asyncio.run(main()) == [[0], [1, 2], [3], [4, 5], [6]]


def test_an_error_reaches_only_its_own_request():
    async def main():
        fn = Recorder(fail_on=3)
        fn.gate.clear()
        s = BatchScheduler("m", fn)
        s.start()
        jobs = [s.submit(i, cost=1) for i in range(6)]
        fn.gate.set()
        out = await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)
        s.close()
        s.join(5)
        return out

    out = asyncio.run(main())
    assert [o for i, o in enumerate(out) if i != 3] == [0, 1, 4, 16, 25]
    assert isinstance(out[3], ValueError) and str(out[3]) == "bad 3"


def test_a_failing_batch_function_fails_its_batch_and_the_worker_keeps_serving():
    calls = []

    def flaky(payloads):
        calls.append(list(payloads))
        if len(calls) == 1:
            raise RuntimeError("model crashed")
        return [p + 1 for p in payloads]

    async def main():
        s = BatchScheduler("m", flaky)
        s.start()
        first = s.submit(1, cost=1)
        with pytest.raises(RuntimeError, match="model crashed"):
            await first.future
        second = await s.submit(2, cost=1).future
        s.close()
        s.join(5)
        return second

    assert asyncio.run(main()) == 3


def test_wrong_result_count_is_an_error_not_a_misrouted_result():
    async def main():
        s = BatchScheduler("m", lambda payloads: [1])
        s.start()
        s.submit(0, cost=1)  # may run alone; make sure two are in one batch:
        jobs = [s.submit(i, cost=1) for i in range(2)]
        out = await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)
        s.close()
        s.join(5)
        return out

    out = asyncio.run(main())
    assert all(o == 1 or isinstance(o, RuntimeError) for o in out)


def test_full_queue_refuses_and_closed_scheduler_refuses():
    async def main():
        fn = Recorder()
        fn.gate.clear()
        s = BatchScheduler("m", fn, max_queue=2)
        s.start()
        running = s.submit(0, cost=1)
        await asyncio.to_thread(fn.entered.wait, 5)
        queued = [s.submit(1, cost=1), s.submit(2, cost=1)]
        with pytest.raises(QueueFullError):
            s.submit(3, cost=1)
        fn.gate.set()
        await asyncio.gather(running.future, *(j.future for j in queued))
        s.close()
        with pytest.raises(SchedulerClosedError):
            s.submit(4, cost=1)
        s.join(5)

    asyncio.run(main())


def test_cancelled_queued_job_never_runs_and_running_job_cannot_be_cancelled():
    async def main():
        fn = Recorder()
        fn.gate.clear()
        s = BatchScheduler("m", fn)
        s.start()
        running = s.submit(0, cost=1)
        await asyncio.to_thread(fn.entered.wait, 5)
        a, b, c = (s.submit(i, cost=1) for i in (1, 2, 3))
        assert s.cancel(b) is True
        assert s.cancel(running) is False
        assert b.future.cancelled() and s.depth == 2
        fn.gate.set()
        await asyncio.gather(running.future, a.future, c.future)
        s.close()
        s.join(5)
        return fn.batches

    batches = asyncio.run(main())
    assert batches == [[0], [1, 3]]


def test_cancelling_the_awaiting_task_drops_the_queued_job():
    async def main():
        fn = Recorder()
        fn.gate.clear()
        s = BatchScheduler("m", fn)
        s.start()
        running = asyncio.create_task(s.run(0, cost=1))
        await asyncio.to_thread(fn.entered.wait, 5)
        waiting = asyncio.create_task(s.run(1, cost=1))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        fn.gate.set()
        assert await running == 0
        s.close()
        s.join(5)
        return fn.batches

    assert asyncio.run(main()) == [[0]]


def test_close_drains_everything_already_queued():
    async def main():
        fn = Recorder()
        fn.gate.clear()
        s = BatchScheduler("m", fn, max_batch_jobs=3)
        s.start()
        jobs = [s.submit(i, cost=1) for i in range(8)]
        s.close()
        fn.gate.set()
        assert await asyncio.to_thread(s.join, 5)
        return [j.future.result() for j in jobs]

    assert asyncio.run(main()) == [i * i for i in range(8)]


def test_the_event_loop_stays_free_while_the_model_computes():
    def slow(payloads):
        time.sleep(0.3)
        return payloads

    async def main():
        s = BatchScheduler("m", slow)
        s.start()
        job = s.submit(1, cost=1)
        ticks = 0
        while not job.future.done():
            await asyncio.sleep(0.01)
            ticks += 1
        s.close()
        s.join(5)
        return ticks

    assert asyncio.run(main()) >= 10


@settings(max_examples=40, deadline=None)
@given(
    costs=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
    budget=st.integers(min_value=1, max_value=60),
    max_jobs=st.integers(min_value=1, max_value=8),
    cancel=st.sets(st.integers(min_value=0, max_value=29)),
)
def test_batches_preserve_arrival_order_and_respect_the_budget(costs, budget, max_jobs, cancel):
    async def main():
        fn = Recorder()
        fn.gate.clear()
        s = BatchScheduler("m", fn, max_batch_cost=budget, max_batch_jobs=max_jobs, max_queue=100)
        s.start()
        head = s.submit(-1, cost=1)
        await asyncio.to_thread(fn.entered.wait, 5)
        jobs = [s.submit(i, cost=c) for i, c in enumerate(costs)]
        for i in cancel:
            if i < len(jobs):
                s.cancel(jobs[i])
        fn.gate.set()
        await asyncio.gather(head.future, *(j.future for j in jobs), return_exceptions=True)
        s.close()
        s.join(5)
        return fn.batches

    batches = asyncio.run(main())[1:]
    kept = [i for i in range(len(costs)) if i not in cancel]
    assert [p for b in batches for p in b] == kept
    for b in batches:
        assert len(b) <= max_jobs
        assert len(b) == 1 or sum(costs[i] for i in b) <= budget
