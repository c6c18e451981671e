"""Benchmark: a stage-2 training step from the hidden-state cache vs recomputing the frozen LLM.

    python tests/benchmarks/bench_stage2_cache.py     # the demo config (needs make units and a stage-1 model)
    python tests/benchmarks/bench_stage2_cache.py --config train/configs/stage2_tiny.yaml --steps 20

Both modes train the same decoder on the same records, interleaved in one process: "cached" reads the
response states from the cache, "recomputed" runs encoder + adaptor + LLM for them at every step, as a
trainer without the cache must. Prints samples/s of each and their ratio, and the largest difference
between the two losses of a batch (0 up to float rounding).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from omni.config import SpeechDecoderConfig, from_dict
from omni.data import SpeechCollator, SpeechInstructionDataset
from omni.hidden_cache import collate_hidden, open_or_build
from omni.model import OmniModel
from omni.speech_decoder import SpeechDecoder, pad_units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="train/configs/stage2_demo.yaml")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=None, help="default: the config's train.batch_size")
    args = parser.parse_args()
    recipe = yaml.safe_load(Path(args.config).read_text())  # the stage-2 YAML: model, decoder, data, train
    decoder_config = from_dict(SpeechDecoderConfig, recipe["decoder"], args.config)
    batch_size = args.batch or recipe["train"]["batch_size"]
    records = batch_size * (args.steps + 1)
    data = SpeechInstructionDataset(recipe["data"]["train"], num_units=decoder_config.num_units)
    data.rows = data.rows[:records]
    frozen = OmniModel.from_pretrained(recipe["model"]).eval()
    cache_dir = Path(tempfile.mkdtemp()) / "cache"
    cached = open_or_build(cache_dir, data, recipe["model"], lambda: frozen)
    collate = SpeechCollator.for_model(frozen, label_history=False)

    torch.manual_seed(0)
    decoder = SpeechDecoder(decoder_config, frozen.hidden_size)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=0.0)  # lr 0: both modes see the same weights

    def step(mode: str, index: int) -> tuple[float, float]:
        rows = range(index * batch_size, (index + 1) * batch_size)
        start = time.perf_counter()
        if mode == "cached":
            b = collate_hidden([cached[i] for i in rows])
            hidden, lengths, units, unit_lengths = b["hidden"], b["lengths"], b["units"], b["unit_lengths"]
        else:
            examples = [data[i] for i in rows]
            hidden, lengths = frozen.response_hidden_states(collate(examples))
            units, unit_lengths = pad_units([ex.units for ex in examples])
        loss = decoder.loss(hidden, lengths, units, unit_lengths)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start, loss.item()

    step("cached", 0), step("recomputed", 0)  # warm-up
    times: dict[str, list[float]] = {"cached": [], "recomputed": []}
    differences = []
    for index in range(1, args.steps + 1):
        losses = {}
        for mode in times:
            seconds, losses[mode] = step(mode, index)
            times[mode].append(seconds)
        differences.append(abs(losses["cached"] - losses["recomputed"]))
    rate = {mode: batch_size / statistics.median(t) for mode, t in times.items()}
    print(f"config={args.config} threads={torch.get_num_threads()} batch={batch_size} steps={args.steps}")
    for mode in times:
        print(f"{mode:>10}: {statistics.median(times[mode]):.3f} s/step, {rate[mode]:.2f} samples/s")
    print(f"ratio cached / recomputed = {rate['cached'] / rate['recomputed']:.2f}x samples/s")
    print(f"largest loss difference between the modes: {max(differences):.2e}")


if __name__ == "__main__":
    main()
