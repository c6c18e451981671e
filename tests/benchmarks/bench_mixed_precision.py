"""Benchmark: training steps in fp32 against bf16 autocast on this machine, side by side, for the demo's models.

    python tests/benchmarks/bench_mixed_precision.py           # speech decoder and unit-to-mel, the demo's shapes
    python tests/benchmarks/bench_mixed_precision.py --llm .cache/assets/smollm2-135m-instruct   # and a LoRA LLM step

`train.mixed_precision: auto` picks bf16 on CUDA and on CPUs with native bf16 matrix units (AMX or AVX512-BF16),
where oneDNN runs bf16 matrix products several times faster than fp32. Each model takes the same AdamW steps on
the same random batch in both precisions, alternating, after a warm-up; the script prints the median seconds per
step in each and their ratio, and the relative difference of the losses after those steps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml

from omni.config import SpeechDecoderConfig, UnitToMelConfig, from_dict
from omni.speech_decoder import SpeechDecoder, ctc_loss, ctc_min_frames
from omni.vocoder.unit_to_mel import UnitToMel, unit_to_mel_loss


def recipe_part(path: str, key: str, schema: type):
    """One section of a shipped recipe (the demo's sizes), as its typed config."""
    return from_dict(schema, yaml.safe_load(Path(path).read_text())[key], f"{path}: {key}")


def decoder_step(batch: int, tokens: int) -> Callable[[], torch.Tensor]:
    config = recipe_part("train/configs/stage2_demo.yaml", "decoder", SpeechDecoderConfig)
    model = SpeechDecoder(config, 576)
    states, lengths = torch.randn(batch, tokens, 576), torch.full((batch,), tokens)
    units = torch.randint(0, config.num_units, (batch, tokens * 10))
    unit_lengths = torch.full((batch,), tokens * 10)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)

    def step() -> torch.Tensor:
        logits, frames = model(states, lengths, None, ctc_min_frames(units, unit_lengths))
        return ctc_loss(logits, frames, units, unit_lengths, config.num_units)

    return _training(step, optimizer)


def unit_to_mel_step(batch: int, units: int) -> Callable[[], torch.Tensor]:
    config = recipe_part("train/configs/vocoder_demo.yaml", "model", UnitToMelConfig)
    model = UnitToMel(config)
    frames = int(units * 2 * config.mel_rate / config.unit_rate)  # two Whisper frames a unit
    b = {
        "units": torch.randint(0, config.num_units, (batch, units)),
        "lengths": torch.full((batch,), units),
        "durations": torch.full((batch, units), 2),
        "frames": torch.full((batch,), frames),
        "mels": torch.randn(batch, frames, config.n_mels),
    }
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)

    def step() -> torch.Tensor:
        return unit_to_mel_loss(*model(b["units"], b["lengths"], b["durations"], b["frames"]), b)

    return _training(step, optimizer)


def llm_step(path: str, batch: int, length: int) -> Callable[[], torch.Tensor]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    llm = get_peft_model(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    ids = torch.randint(0, llm.config.vocab_size, (batch, length))
    optimizer = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], 1e-4)
    return _training(lambda: llm(input_ids=ids, labels=ids).loss, optimizer)


def _training(loss: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        value = loss()
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        return value.detach().float()

    return step


def measure(name: str, make: Callable[[], Callable[[], torch.Tensor]], steps: int) -> None:
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    losses: dict[str, float] = {}
    torch.manual_seed(0)
    runs = {"fp32": make()}
    torch.manual_seed(0)
    runs["bf16"] = make()  # the same weights and batch
    contexts = {"fp32": nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    for precision in runs:  # warm-up
        with contexts[precision]():
            runs[precision]()
    for _ in range(steps):
        for precision, step in runs.items():
            start = time.perf_counter()
            with contexts[precision]():
                losses[precision] = float(step())
            times[precision].append(time.perf_counter() - start)
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    gap = abs(losses["bf16"] - losses["fp32"]) / abs(losses["fp32"])
    print(f"| {name} | {fp32:.3f} | {bf16:.3f} | {fp32 / bf16:.2f}x | {gap:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--llm", help="a Hugging Face LLM directory for a LoRA step (e.g. the demo's SmolLM2)")
    args = parser.parse_args()
    capability = {n: getattr(torch.cpu, f"_is_{n}_supported", lambda: False)() for n in ("amx_tile", "avx512_bf16")}
    print(f"threads={torch.get_num_threads()} cpu={capability}")
    print("| training step | fp32 s | bf16 s | fp32 / bf16 | loss gap after the steps |\n|---|---|---|---|---|")
    measure("speech decoder (demo: 16 x 25 tokens, lambda 20)", lambda: decoder_step(16, 25), args.steps)
    measure("unit-to-mel (demo: 16 x 150 units)", lambda: unit_to_mel_step(16, 150), args.steps)
    if args.llm:
        measure("LLM with LoRA (4 x 120 tokens)", lambda: llm_step(args.llm, 4, 120), args.steps)


if __name__ == "__main__":
    main()
