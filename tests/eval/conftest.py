"""Fixtures of the evaluation tests."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omni.serve.launch import free_port

JUDGE_SERVER = Path(__file__).with_name("judge_server.py")


@pytest.fixture
def judge_url():
    """A judge endpoint process on loopback (judge_server.py); yields a function that starts one."""
    processes = []

    def start(*options: str) -> str:
        port = free_port()
        processes.append(subprocess.Popen([sys.executable, str(JUDGE_SERVER), "--port", str(port), *options]))
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return f"http://127.0.0.1:{port}/v1"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the judge endpoint did not start")

    yield start
    for process in processes:
        process.kill()
        process.wait()
