"""Benchmark: speech-decoder cost per text token against answer length, incremental vs full recomputation.

    python tests/benchmarks/bench_decoder_incremental.py                       # the demo decoder's size
    python tests/benchmarks/bench_decoder_incremental.py --config train/configs/stage2_llama31_8b.yaml --lengths 10 50

Streaming runs the decoder after every text token. The reference recomputes it over the whole answer so
far (cost grows with the answer); omni computes only the new token's lambda frames over cached keys and
values (cost stays flat). Both run side by side in one process on the same random states, and the
script prints milliseconds per token at each answer length and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from omni.config import SpeechDecoderConfig, from_dict
from omni.speech_decoder import SpeechDecoder


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="train/configs/stage2_demo.yaml", help="a stage-2 config: its decoder")
    parser.add_argument("--llm-hidden", type=int, default=576, help="width of the LLM's states (SmolLM2: 576)")
    parser.add_argument("--lengths", type=int, nargs="*", default=[10, 50, 100, 200, 400])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = from_dict(SpeechDecoderConfig, yaml.safe_load(Path(args.config).read_text())["decoder"], args.config)
    decoder = SpeechDecoder(config, args.llm_hidden).eval()
    states = torch.randn(1, max(args.lengths) + 1, args.llm_hidden)
    print(f"config={args.config} threads={torch.get_num_threads()} lambda={decoder.config.upsample}")
    print("answer tokens | incremental ms/token | recompute ms/token | ratio")
    for length in args.lengths:
        _, cache = decoder.step(states[:, :length])  # the answer so far, cached once
        incremental, recompute = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            decoder.step(states[:, length : length + 1], cache)
            incremental.append(time.perf_counter() - start)
            cache.crop(-decoder.config.upsample)  # forget the timed token: the next repeat is the same
            start = time.perf_counter()
            decoder(states[:, : length + 1], torch.tensor([length + 1]))
            recompute.append(time.perf_counter() - start)
        ours, theirs = statistics.median(incremental) * 1000, statistics.median(recompute) * 1000
        print(f"{length:13d} | {ours:20.2f} | {theirs:18.2f} | {theirs / ours:5.1f}x")


if __name__ == "__main__":
    main()
