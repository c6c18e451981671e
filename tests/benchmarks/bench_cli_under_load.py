"""`omni generate` beside a competing job: alone, then beside a job that keeps every core busy, waiting on
OpenMP passively (omni's default) and spinning (OpenMP's own), side by side with the ratios.

    python tests/benchmarks/bench_cli_under_load.py [--runs 3]

The answer is the tiny models' (`--tiny`) to a one-second question, timed as the whole process (start-up
included). The competing job is a torch matrix loop on every core, started before each answer and stopped after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

HOG = """
import torch
torch.set_num_threads({threads})
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""


def timed_answer(question: Path, out: Path, policy: str | None) -> float:
    env = os.environ.copy()
    env.pop("OMP_WAIT_POLICY", None)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    began = time.perf_counter()
    command = [sys.executable, "-m", "omni.cli", "generate", str(question), "--tiny", "-o", str(out)]
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - began


def median_of(runs: int, question: Path, out: Path, policy: str | None, hog: bool) -> float:
    times = []
    for _ in range(runs):
        job = None
        if hog:
            code = HOG.format(threads=os.cpu_count() or 1)
            job = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2.0)  # the job is at full speed
        try:
            times.append(timed_answer(question, out, policy))
        finally:
            if job is not None:
                job.kill()
                job.wait()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="answers per setting (the median is printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        question, out = Path(tmp) / "question.wav", Path(tmp) / "answer.wav"
        sf.write(question, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
        timed_answer(question, out, None)  # warm: the tiny models are written once
        alone = median_of(args.runs, question, out, None, hog=False)
        passive = median_of(args.runs, question, out, None, hog=True)  # omni's default: PASSIVE
        spinning = median_of(args.runs, question, out, "ACTIVE", hog=True)
    print(f"omni generate --tiny, {os.cpu_count()} cores, median of {args.runs} (seconds, start-up included):")
    print(f"  alone {alone:.2f}; beside a busy job: passive wait (default) {passive:.2f}, spinning {spinning:.2f}")
    print(f"  beside / alone: passive {passive / alone:.2f}x, spinning {spinning / alone:.2f}x")


if __name__ == "__main__":
    main()
