"""Benchmark: building the hidden-state cache with records batched by length vs in the dataset's order.

    python tests/benchmarks/bench_hidden_cache_build.py          # 256 demo records (make units, a stage-1 model)
    python tests/benchmarks/bench_hidden_cache_build.py --records 64 --rounds 1

The same records are cached both ways, alternately in one process (`build_cache`'s `sort_pool` 16 and 1):
prints records/s of each, their ratio, and the largest difference between the two caches' states (padding
changes, the states should not beyond float rounding).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from omni.data import SpeechInstructionDataset
from omni.hidden_cache import HiddenCacheDataset, build_cache, finish_cache
from omni.model import OmniModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/stage1_demo/model")
    parser.add_argument("--data", default="data/demo/units/train.jsonl")
    parser.add_argument("--records", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="the demo's cache.batch_size")
    parser.add_argument("--rounds", type=int, default=2, help="builds of each way, alternating")
    args = parser.parse_args()
    data = SpeechInstructionDataset(args.data)
    data.rows = data.rows[: args.records]
    model = OmniModel.from_pretrained(args.model).eval()
    ways = {"by length": 16, "as read": 1}
    seconds: dict[str, float] = dict.fromkeys(ways, 0.0)
    out = Path(tempfile.mkdtemp())
    with torch.inference_mode():
        for r in range(args.rounds):
            for name, pool in ways.items():
                folder = out / f"{pool}-{r}"
                start = time.perf_counter()
                build_cache(model, data, folder, "bench", batch_size=args.batch, shard_size=1024, sort_pool=pool)
                seconds[name] += time.perf_counter() - start
                finish_cache(folder, "bench", len(data), shard_size=1024)
    caches = [HiddenCacheDataset(out / f"{pool}-0") for pool in ways.values()]
    difference = max((a["hidden"] - b["hidden"]).abs().max().item() for a, b in zip(*caches, strict=True))
    rate = {name: args.records * args.rounds / s for name, s in seconds.items()}
    print(f"model={args.model} records={args.records} batch={args.batch} threads={torch.get_num_threads()}")
    for name in ways:
        print(f"{name:>10}: {rate[name]:.2f} records/s")
    print(f"ratio by length / as read = {rate['by length'] / rate['as read']:.2f}x records/s")
    print(f"largest state difference between the two caches: {difference:.2e}")


if __name__ == "__main__":
    main()
