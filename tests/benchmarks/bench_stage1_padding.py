"""Benchmark: one stage-1 training step, variable-length input vs the reference's 30 s padding.

    python tests/benchmarks/bench_stage1_padding.py              # tiny random models (built in a temp dir)
    python tests/benchmarks/bench_stage1_padding.py --whisper base.pt --llm path/to/llm --batch 4

Both modes run side by side in one process on the same 3-5 s clips, interleaved, and the script
prints the median step time of each and their ratio (30 s / variable).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from omni.config import AdaptorConfig, EncoderConfig, LLMConfig, ModelConfig
from omni.data import Example, SpeechCollator
from omni.model import OmniModel
from omni.tiny import tiny_llm, tiny_whisper


def step_seconds(model: OmniModel, batch: dict, optimizer: torch.optim.Optimizer) -> float:
    start = time.perf_counter()
    loss = model(batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--whisper", help="openai-whisper checkpoint (default: tiny random)")
    parser.add_argument("--llm", help="Hugging Face LLM directory (default: tiny random)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--train", default="lora", choices=["full", "lora"])
    args = parser.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    whisper_path = args.whisper or str(tiny_whisper(tmp / "whisper.pt"))
    llm_path = args.llm or str(tiny_llm(tmp / "llm"))
    base = ModelConfig(
        encoder=EncoderConfig(name_or_path=whisper_path),
        adaptor=AdaptorConfig(hidden_size=256),
        llm=LLMConfig(name_or_path=llm_path, train=args.train),
    )
    model = OmniModel.from_config(base)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    rng = np.random.default_rng(0)
    examples = [
        Example(
            str(i),
            (0.1 * rng.standard_normal(int(rng.uniform(3, 5) * 16000))).astype(np.float32),
            "Paris is the capital of France.",
            None,
            None,
        )
        for i in range(args.batch)
    ]
    batches = {}
    for mode, pad in (("variable", False), ("pad_to_30s", True)):
        encoder = replace(base.encoder, pad_to_30s=pad)
        batches[mode] = SpeechCollator(model.prompt, encoder, model.encoder.n_mels, base.adaptor.stride)(examples)
    times: dict[str, list[float]] = {mode: [] for mode in batches}
    for batch in batches.values():  # warm-up
        step_seconds(model, batch, optimizer)
    for _ in range(args.steps):
        for mode, batch in batches.items():
            times[mode].append(step_seconds(model, batch, optimizer))
    median = {mode: statistics.median(t) for mode, t in times.items()}
    print(f"threads={torch.get_num_threads()} batch={args.batch} clips=3-5 s train={args.train}")
    for mode, batch in batches.items():
        print(
            f"{mode:>11}: {median[mode] * 1000:8.1f} ms/step, sequence length {batch['input_ids'].shape[1]}, "
            f"mel frames {batch['mels'].shape[-1]}"
        )
    print(f"ratio pad_to_30s / variable = {median['pad_to_30s'] / median['variable']:.2f}x")


if __name__ == "__main__":
    main()
