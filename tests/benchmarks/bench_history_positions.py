"""Benchmark: what an earlier exchange of a conversation costs in LLM positions, questions as speech or as text.

    python tests/benchmarks/bench_history_positions.py --model runs/stage1_demo/model --data data/demo/train.jsonl

Consecutive records of the manifest are paired into made-up two-turn dialogues (the first as the earlier
exchange, its question given as speech and as its words), and the prompt of the second is encoded with each
`prompt.history`, the earlier question's speech embeddings counted from its duration as the collator counts
them. Prints the mean and median extra positions per earlier exchange for each way and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from omni.audio import SAMPLE_RATE, window_frames
from omni.data import speech_embedding_count
from omni.model import load_model_config
from omni.prompt import PromptBuilder, Turn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("runs/stage1_demo/model"))
    parser.add_argument("--data", type=Path, default=Path("data/demo/train.jsonl"), help="records with duration")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    config = load_model_config(args.model)
    tokenizer = AutoTokenizer.from_pretrained(config.llm.name_or_path)
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]

    def embeddings(seconds: float) -> int:
        return speech_embedding_count(window_frames(int(seconds * SAMPLE_RATE), False), config.adaptor.stride)

    extra: dict[str, list[int]] = {"speech": [], "text": []}
    for way in extra:
        builder = PromptBuilder(tokenizer, replace(config.prompt, history=way))
        for first, second in zip(rows[0::2], rows[1::2], strict=False):
            history = (Turn("user", first["instruction"], "unused.wav"), Turn("assistant", first["response"]))
            current = embeddings(second["duration"])
            alone, _ = builder.encode(current, second["response"])
            counts = [embeddings(first["duration"]), current] if way == "speech" else current
            together, _ = builder.encode(counts, second["response"], history)
            extra[way].append(len(together) - len(alone))
    for way, values in extra.items():
        mean, median = statistics.fmean(values), statistics.median(values)
        print(f"{way:6s}: +{mean:.1f} positions per earlier exchange (median {median})")
    ratio = statistics.fmean(extra["speech"]) / statistics.fmean(extra["text"])
    seconds = statistics.fmean(r["duration"] for r in rows)
    print(f"speech / text: {ratio:.2f}x over {len(extra['text'])} pairs (questions of {seconds:.2f} s on average)")


if __name__ == "__main__":
    main()
