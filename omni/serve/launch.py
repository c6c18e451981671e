"""`omni serve` in a child process on a free loopback port, for tests, the load test and scripts.

    with launched(["--tiny"]) as server:
        print(ask(server.url, "question.wav").text)

A real process, not an in-process app: what is tested is what a user runs.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path  # its stdout and stderr

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched(args: list[str], log: Path | None = None, timeout: float = 300) -> Iterator[Server]:
    """Starts `python -m omni.serve ARGS` on 127.0.0.1, waits until /ready answers 200, stops it at the end."""
    port = free_port()
    log = log or Path(tempfile.mkstemp(prefix="omni-serve-", suffix=".log")[1])
    command = [sys.executable, "-m", "omni.serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_ready(server, timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            status = server.process.returncode
            raise RuntimeError(f"omni serve exited with status {status}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"omni serve not ready after {timeout:.0f} s:\n{server.log_text()[-3000:]}")
