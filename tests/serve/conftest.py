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

from omni.generate import Event
from omni.serve.launch import Server, launched
from omni.serve.tiny import write_tiny_models

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
    args += [f"--max-message-bytes={MAX_MESSAGE_BYTES}", "--max-new-tokens=64"]
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
    """Answers each request of a batch with `tokens` words and 100-sample chunks; records the batches."""

    vocoder = Vocoder()

    def __init__(self, tokens: int = 3, delay: float = 0.0, fail_at: int | None = None):
        self.tokens, self.delay, self.fail_at = tokens, delay, fail_at
        self.batches: list[tuple[int, int | None]] = []
        self.histories: list[list] = []  # each batch's requests' earlier turns
        self.steps = 0
        self.closed = False

    def batch(self, audios, chunk_size, max_new_tokens, histories=None):
        self.batches.append((len(audios), chunk_size))
        self.histories.append(list(histories or [()] * len(audios)))
        self.closed = False
        try:
            for i in range(len(audios)):
                yield Event("prefill", 0.0, request=i)
            for step in range(self.tokens):
                if step == self.fail_at:
                    raise RuntimeError("out of memory")
                time.sleep(self.delay)
                self.steps += 1
                for i in range(len(audios)):
                    yield Event("text", 0.0, text=f" w{step}", request=i)
                    yield Event("audio", 0.0, audio=np.full(100, step, np.float32), sample_rate=16000, request=i)
            for i in range(len(audios)):
                words = "".join(f" w{s}" for s in range(self.tokens))
                yield Event("done", 0.0, words, [1], np.zeros(0), 16000, request=i)
        finally:
            self.closed = True
