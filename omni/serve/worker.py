"""The one thread that owns the model: a bounded set of places, a queue, and a live batch.

A question holds a place from its start message to the end of its answer (or its client's leaving), so
a full server says "busy" before the user speaks, and at most `max_queue` questions are held, waited
on or answered at once: memory stays bounded however many clients connect. Answers are written in one
`LiveBatch` (continuous batching): a question that arrives while others are answered joins them at the next
token step, up to `max_batch` at once, whatever Omega each asks; an answered one leaves. When nothing is being
answered, the first question waits `batch_window` for others to prefill with it. A place is freed the moment its
client leaves, and an answer interrupted or left is dropped from the batch at the next token step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from omni.prompt import Turn
from omni.serve.answer import Answer, Out
from omni.serve.protocol import ProtocolError
from omni.speech_generator import Event, Question, SpeechGenerator

logger = logging.getLogger("omni.serve")


class Job:
    """One question's place on the server; its answer's events arrive on the asyncio loop that made it."""

    def __init__(self, worker: Worker, request_id: str, loop: asyncio.AbstractEventLoop):
        self.worker = worker
        self.id = request_id
        self.loop = loop
        self.state = "listening"  # -> waiting -> running -> finished
        self.cancelled = threading.Event()
        self.audio: np.ndarray | None = None
        self.history: tuple[Turn, ...] = ()  # the earlier turns of its client's conversation
        self.chunk_size = 10
        self.sample_rate = 16000
        self.asked_at = 0.0
        self._events: asyncio.Queue[Out | None] = asyncio.Queue()

    def emit(self, out: Out | None) -> None:
        """From the worker thread: one event for the client, or None at the end of the answer."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is shutting down
            self.loop.call_soon_threadsafe(self._events.put_nowait, out)

    async def events(self) -> AsyncIterator[Out]:
        while (out := await self._events.get()) is not None:
            yield out

    def close(self) -> None:
        """Frees the place (idempotent); an answer still waited on or written is cancelled."""
        self.worker.release(self)


class Worker:
    def __init__(
        self,
        generator: SpeechGenerator,
        max_queue: int = 16,
        max_batch: int = 8,
        batch_window: float = 0.02,
        max_new_tokens: int = 256,
    ):
        self.generator = generator
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.batch_window = batch_window
        self.max_new_tokens = max_new_tokens
        self.counts: Counter[str] = Counter()  # served, cancelled, batches, batched (questions in batches)
        self._held: set[Job] = set()
        self._waiting: list[Job] = []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="omni-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        """Taking questions: the model's thread runs."""
        return self._thread.is_alive() and not self._stopping

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def reserve(self) -> Job:
        """A place for a new question, or ProtocolError("busy") when all are held."""
        with self._cond:
            if len(self._held) >= self.max_queue:
                raise ProtocolError("busy", f"the server is answering {self.max_queue} questions; try again soon")
            job = Job(self, f"q{next(self._ids)}", asyncio.get_running_loop())
            self._held.add(job)
            return job

    def submit(
        self, job: Job, audio: np.ndarray, chunk_size: int, sample_rate: int, history: Sequence[Turn] = ()
    ) -> None:
        """Queues a held question's audio (and its conversation's earlier turns) for answering."""
        with self._cond:
            if job not in self._held:  # its client left meanwhile
                return
            job.audio, job.chunk_size, job.sample_rate, job.history = audio, chunk_size, sample_rate, tuple(history)
            job.asked_at, job.state = time.perf_counter(), "waiting"
            self._waiting.append(job)
            self._cond.notify_all()

    def release(self, job: Job) -> None:
        with self._cond:
            if job not in self._held:
                return
            self._held.remove(job)
            if job.state == "waiting":
                self._waiting.remove(job)
            if job.state in ("waiting", "running"):
                job.cancelled.set()
                self.counts["cancelled"] += 1
                logger.info("%s cancelled: its client left while it was %s", job.id, job.state)
                job.emit(None)  # whoever still reads its events stops

    def interrupt(self, job: Job) -> None:
        """The user spoke over the answer: it stops at the next token step and its place is freed."""
        with self._cond:
            if job not in self._held:
                return
            if job.state == "waiting":
                self._waiting.remove(job)
            if job.state in ("waiting", "running"):
                self.counts["interrupted"] += 1
                job.cancelled.set()  # the live batch drops it at the next token step
            job.state = "finished"  # so that releasing it counts no cancellation
        self.release(job)

    def status(self) -> dict[str, Any]:
        with self._cond:
            states = Counter(job.state for job in self._held)
            return {
                "ready": self.alive(),
                "active": len(self._held),
                "max_queue": self.max_queue,
                **{state: states[state] for state in ("listening", "waiting", "running")},
                **{name: self.counts[name] for name in ("served", "cancelled", "interrupted", "batches", "batched")},
            }

    def _run(self) -> None:
        live = self.generator.live()
        jobs: dict[str, tuple[Job, Answer]] = {}
        while (joining := self._next_joining(len(live))) is not None:
            try:  # whatever fails, the thread goes on with the next questions
                for job_id in [i for i, (job, _) in jobs.items() if job.cancelled.is_set()]:
                    live.leave(job_id)  # its client left or stopped it: no more work for it
                    del jobs[job_id]
                if joining:
                    if not live:  # a fresh batch, so that a vocoder process that died meanwhile is started again
                        live = self.generator.live()
                    started = time.perf_counter()
                    rate = self.generator.vocoder.sample_rate
                    for job in joining:
                        jobs[job.id] = (job, Answer(job.id, rate, job.sample_rate, job.asked_at, started))
                    questions = [
                        Question(
                            job.audio, job.chunk_size or None, job.history, self.max_new_tokens, job.id, job.asked_at
                        )
                        for job in joining
                    ]
                    self._deliver(live.join(questions), jobs)
                if live:
                    self._deliver(live.step(), jobs)
            except Exception as err:
                logger.exception("generation failed for %s", ", ".join(jobs) or "-")
                for job, _ in jobs.values():
                    self._finish(job, [(ProtocolError("internal", f"the model failed: {err}").event(), None)], False)
                jobs.clear()
                live = self.generator.live()

    def _next_joining(self, running: int) -> list[Job] | None:
        """The waiting questions that join the live batch now (none while it is full); None to stop. An idle server
        waits for a question, then `batch_window` for others to come with it."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if running:
                    break
                if self._waiting:
                    wait = self._waiting[0].asked_at + self.batch_window - time.perf_counter()
                    if wait <= 0 or len(self._waiting) >= self.max_batch:
                        break
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            joining = self._waiting[: max(0, self.max_batch - running)]
            for job in joining:
                self._waiting.remove(job)
                job.state = "running"
            if joining:
                self.counts["batches"] += running == 0
                self.counts["batched"] += len(joining)
            return joining

    def _deliver(self, events: list[Event], jobs: dict[str, tuple[Job, Answer]]) -> None:
        """The live batch's events to their clients; an answered job leaves `jobs`."""
        for event in events:
            if event.request not in jobs:
                continue
            job, answer = jobs[event.request]
            if job.cancelled.is_set():
                continue
            outs = answer.feed(event)
            if event.kind == "done":
                del jobs[event.request]
                self._finish(job, outs, served=True)
            else:
                for out in outs:
                    job.emit(out)

    def _finish(self, job: Job, last: list[Out], served: bool) -> None:
        """Marks the job finished before its last events go out, so that closing it then cancels nothing."""
        with self._cond:
            if served and not job.cancelled.is_set():
                self.counts["served"] += 1
            job.state = "finished"
        for out in [*last, None]:
            job.emit(out)


def warm_up(generator: SpeechGenerator) -> float:
    """One short answer before any user's: a model's first call is much slower than the next (lazy
    initialisation, kernels); returns the seconds it took."""
    began = time.perf_counter()
    noise = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    for _ in generator(noise, chunk_size=10, max_new_tokens=4):
        pass
    return time.perf_counter() - began
