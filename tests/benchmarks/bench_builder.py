"""Records per minute of the data builder on the demo config, with 1 and 2 processes, side by side.

    python tests/benchmarks/bench_builder.py --records 96     # make bench-builder

The same demo instructions are built twice from scratch into temporary folders: once in one process, once
by two shard processes and a merge. Prints records per minute for each, their ratio, and the time per step
(summed over shards: with two processes the steps overlap in time).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build(folder: Path, records: int, processes: int, llm: str) -> tuple[float, dict]:
    source = folder / "instructions.jsonl"
    subprocess.run(
        [sys.executable, "-m", "data_recipes.demo.instructions", "--out", str(source), "--max-train", str(records)]
        + ["--max-heldout", "0"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    command = [sys.executable, "-m", "data_recipes.builder", "build", "--config", "data_recipes/configs/demo.yaml"]
    command += ["--processes", str(processes), f"out={folder / 'out'}", f"source.path={source}", f"llm.model={llm}"]
    began = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    seconds = time.perf_counter() - began
    return seconds, json.loads((folder / "out" / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=96, help="demo instructions built")
    parser.add_argument("--llm", default=".cache/assets/smollm2-135m-instruct")
    args = parser.parse_args()
    rates = {}
    for processes in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, report = build(Path(tmp), args.records, processes, args.llm)
        built = sum(report["records"].values())
        rates[processes] = 60 * args.records / seconds
        steps = ", ".join(f"{name} {s['seconds']:.1f} s" for name, s in report["steps"].items() if "seconds" in s)
        print(
            f"{processes} process(es): {args.records} records in {seconds:.1f} s = {rates[processes]:.1f} records/min "
            f"({built} kept); per step: {steps}"
        )
    print(f"2 processes / 1 process: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
