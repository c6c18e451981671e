"""A real `omni serve` process on loopback with tiny random models, shared by the server and browser tests,
and a scripted stand-in for the generator, for the in-process tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from omni.serve.launch import Server, launched
from omni.speech_generator import Event
from omni.tiny import write_tiny_models

# 3 s of read speech, 16 kHz 16-bit mono (Debian's pocketsphinx-testdata, installed by make's system-deps)
WAV = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")
MAX_QUEUE = 3
MAX_SECONDS = 8.0
MAX_MESSAGE_BYTES = 400_000


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_models(tmp_path_factory.mktemp("serve_models"))


@pytest.fixture(scope="session")
def server(tiny_models, tmp_path_factory) -> Iterator[Server]:
    args = [f"--{name}={path}" for name, path in tiny_models.items()]
    args += ["--device=cpu", f"--max-queue={MAX_QUEUE}", f"--max-seconds={MAX_SECONDS}"]
    args += [f"--max-message-bytes={MAX_MESSAGE_BYTES}", "--max-new-tokens=64", "--vocoder-process=on"]
    with launched(args, log=tmp_path_factory.mktemp("serve_log") / "serve.log") as running:
        yield running


def health(server: Server) -> dict[str, Any]:
    return httpx.get(f"{server.url}/health", timeout=10).json()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


class Vocoder:
    sample_rate = 16000


class Script:
    """A scripted stand-in for the generator's live batch (`SpeechGenerator.live`): each row answers with `tokens`
    words and a 100-sample chunk per word; records every join (how many questions, their Omegas, their histories)
    and the rows stepped, and fails at step `fail_at` if set."""

    vocoder = Vocoder()

    def __init__(self, tokens: int = 3, delay: float = 0.0, fail_at: int | None = None):
        self.tokens, self.delay, self.fail_at = tokens, delay, fail_at
        self.joins: list[list[int | None]] = []  # each join's questions' Omegas
        self.histories: list[list] = []  # each join's questions' earlier turns
        self.rows: dict = {}  # request -> words said so far
        self.steps = 0
        self.left: list = []

    def live(self) -> Script:
        self.rows = {}
        return self

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, questions) -> list[Event]:
        self.joins.append([q.chunk_size for q in questions])
        self.histories.append([list(q.history) for q in questions])
        self.rows |= {q.request: 0 for q in questions}
        return [Event("prefill", 0.0, request=q.request) for q in questions]

    def leave(self, request) -> None:
        if self.rows.pop(request, None) is not None:
            self.left.append(request)

    def step(self) -> list[Event]:
        if self.steps == self.fail_at:
            raise RuntimeError("out of memory")
        time.sleep(self.delay)
        self.steps += 1
        events = []
        for request, said in list(self.rows.items()):
            events.append(Event("text", 0.0, text=f" w{said}", request=request))
            events.append(Event("audio", 0.0, audio=np.full(100, said, np.float32), sample_rate=16000, request=request))
            self.rows[request] = said + 1
            if said + 1 == self.tokens:
                words = "".join(f" w{s}" for s in range(self.tokens))
                events.append(Event("done", 0.0, words, [1], np.zeros(0), 16000, request=request))
                del self.rows[request]
        return events
