"""The one thread that owns the model: a bounded set of places, a queue, and batches.

A question holds a place from its start message to the end of its answer (or its client's leaving), so
a full server says "busy" before the user speaks, and at most `max_queue` questions are held, waited
on or answered at once: memory stays bounded however many clients connect. Questions that wait
together (those that arrived while a batch ran, or within `batch_window` of each other) and ask the
same Omega are answered in one call of the batched generator. A place is freed the moment its client
leaves; a batch whose clients have all left stops at once.
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

from omni.generate import SpeechGenerator
from omni.prompt import Turn
from omni.serve.answer import Answer, Out
from omni.serve.protocol import ProtocolError

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

    def status(self) -> dict[str, Any]:
        with self._cond:
            states = Counter(job.state for job in self._held)
            return {
                "ready": self.alive(),
                "active": len(self._held),
                "max_queue": self.max_queue,
                **{state: states[state] for state in ("listening", "waiting", "running")},
                **{name: self.counts[name] for name in ("served", "cancelled", "batches", "batched")},
            }

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._answer(batch)

    def _next_batch(self) -> list[Job] | None:
        """The oldest waiting question and those asking the same Omega, after the batch window; None to stop."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._waiting:
                    wait = self._waiting[0].asked_at + self.batch_window - time.perf_counter()
                    if wait <= 0 or len(self._waiting) >= self.max_batch:
                        break
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            batch = [job for job in self._waiting if job.chunk_size == self._waiting[0].chunk_size][: self.max_batch]
            for job in batch:
                self._waiting.remove(job)
                job.state = "running"
            self.counts["batches"] += 1
            self.counts["batched"] += len(batch)
            return batch

    def _answer(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        rate = self.generator.vocoder.sample_rate
        answers = [Answer(job.id, rate, job.sample_rate, job.asked_at, started) for job in batch]
        events = None
        try:  # whatever fails (the call included), the thread goes on to the next batch
            events = self.generator.batch(
                [job.audio for job in batch],
                batch[0].chunk_size or None,
                self.max_new_tokens,
                histories=[job.history for job in batch],
            )
            for event in events:
                job = batch[event.request]
                if job.cancelled.is_set():
                    if all(j.cancelled.is_set() for j in batch):
                        break  # nobody is listening any more
                    continue
                outs = answers[event.request].feed(event)
                if event.kind == "done":
                    self._finish(job, outs, served=True)
                else:
                    for out in outs:
                        job.emit(out)
        except Exception as err:
            logger.exception("generation failed for %s", ", ".join(job.id for job in batch))
            for job in batch:
                if job.state != "finished":
                    self._finish(job, [(ProtocolError("internal", f"the model failed: {err}").event(), None)], False)
        finally:
            if events is not None:
                events.close()

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
