"""Fixtures of the evaluation tests."""

import sys
from pathlib import Path

import pytest

from omni.serve.launch import free_port

JUDGE_SERVER = Path(__file__).with_name("judge_server.py")


@pytest.fixture
def judge_url(launch):
    """A judge endpoint process on loopback (judge_server.py); yields a function that starts one."""

    def start(*options: str) -> str:
        port = free_port()
        return launch([sys.executable, str(JUDGE_SERVER), "--port", str(port), *options], port, "the judge endpoint")

    return start
