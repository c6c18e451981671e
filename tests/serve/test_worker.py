"""The worker's continuous batching, bounds and cancellation, in process with a scripted stand-in for the generator."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from omni.serve.protocol import ProtocolError
from omni.serve.worker import Job, Worker
from tests.serve.conftest import Script, wait_until


def with_worker(script: Script, test, **settings) -> None:
    async def run():
        worker = Worker(script, **settings)
        worker.start()
        try:
            await test(worker)
        finally:
            worker.stop()

    asyncio.run(run())


async def ask(worker: Worker, chunk_size: int = 10) -> tuple[Job, asyncio.Task]:
    job = worker.reserve()
    worker.submit(job, np.zeros(16000, np.float32), chunk_size, 16000)
    return job, asyncio.create_task(collect(job))


async def collect(job: Job) -> list[dict]:
    """Its events, then its place freed (as a connection does)."""
    events = [event async for event, _ in job.events()]
    job.close()
    return events


def test_questions_asked_together_start_together_and_later_ones_join_the_running_batch():
    script = Script(tokens=6, delay=0.02)

    async def test(worker):
        tasks = [(await ask(worker, omega))[1] for omega in (10, 20)]  # within the window: one prefill, any Omegas
        while script.steps < 2:
            await asyncio.sleep(0.005)
        tasks += [(await ask(worker, 10))[1]]  # while the others are answered: joins at the next step
        answers = await asyncio.gather(*tasks)
        for events in answers:
            assert [e["type"] for e in events][-1] == "done" and events[-1]["text"] == " w0 w1 w2 w3 w4 w5"
            assert [e["seq"] for e in events if e["type"] == "audio"] == [0, 1, 2, 3, 4, 5]
        assert worker.status()["served"] == 3 and worker.status()["active"] == 0
        assert worker.status()["batched"] == 3 and worker.status()["batches"] == 1

    with_worker(script, test, batch_window=0.3, max_batch=4)
    assert script.joins == [[10, 20], [10]]
    assert script.steps < 12  # the third did not wait for the first two to finish


def test_a_full_worker_is_busy_until_a_place_is_freed():
    async def test(worker):
        held = [worker.reserve(), worker.reserve()]
        with pytest.raises(ProtocolError) as refused:
            worker.reserve()
        assert refused.value.kind == "busy" and worker.status()["listening"] == 2
        held[0].close()
        held[0].close()  # idempotent
        worker.reserve()
        assert worker.status()["active"] == 2

    with_worker(Script(), test, max_queue=2)


def test_an_answer_whose_client_left_leaves_the_batch_and_the_next_is_answered():
    script = Script(tokens=200, delay=0.01)

    async def test(worker):
        job, task = await ask(worker)
        while worker.status()["running"] == 0:
            await asyncio.sleep(0.01)
        job.close()
        await asyncio.wait_for(task, 1)  # its events end at once
        await asyncio.to_thread(wait_until, lambda: script.left == [job.id], 2)
        assert script.steps < 200 and worker.status()["cancelled"] == 1
        script.tokens, script.delay = 2, 0.0
        _, second = await ask(worker)
        assert (await second)[-1]["type"] == "done"

    with_worker(script, test)


def test_a_failing_model_gives_an_internal_error_and_the_worker_goes_on():
    script = Script(fail_at=1)

    async def test(worker):
        _, task = await ask(worker)
        events = await task
        assert events[-1]["type"] == "error" and events[-1]["kind"] == "internal"
        assert "out of memory" in events[-1]["message"]
        script.fail_at = None
        _, task = await ask(worker)
        assert (await task)[-1]["type"] == "done" and worker.status()["served"] == 1

    with_worker(script, test)
