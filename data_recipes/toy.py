"""A toy spoken-instruction set: tones whose pitch names the answer, for tests and the quick demo.

    python -m data_recipes.toy data/toy --train 64 --eval 16

Each clip is a 1-4 s tone at one of eight pitches with a little noise; the response names the
pitch ("The tone is three."). A model can only lower its loss by listening, so the toy set shows
that speech reaches the LLM. Each answer also has made-up speech units (a fixed run for "The tone
is" and three units per number word, K = 32) and a made-up spoken answer that says them (each unit a
60 ms tone of its own pitch, so `unit_durations` are 3 Whisper frames each), so stage 2 and the unit
vocoder can be exercised too. It is written in the dataset format of `omni.data`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile

from omni.cli import command_parser

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
NUM_UNITS = 32
PREFIX_UNITS = [1, 2, 3, 4, 5, 6]


def toy_units(label: int) -> list[int]:
    return PREFIX_UNITS + [8 + 3 * label, 9 + 3 * label, 10 + 3 * label]


SAMPLE_RATE = 16000
UNIT_FRAMES = 3  # Whisper frames (20 ms) each made-up unit lasts in the made-up spoken answer


def spoken_units(units: list[int]) -> np.ndarray:
    """A made-up spoken answer: each unit a short tone of its own pitch, UNIT_FRAMES x 20 ms long."""
    t = np.arange(int(UNIT_FRAMES * 0.02 * SAMPLE_RATE)) / SAMPLE_RATE
    return np.concatenate([0.2 * np.sin(2 * np.pi * (150.0 + 25.0 * u) * t) for u in units]).astype(np.float32)


def tone(label: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * 220.0 * (label + 1) * t) + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def write_split(directory: Path, name: str, count: int, rng: np.random.Generator) -> Path:
    (directory / name).mkdir(parents=True, exist_ok=True)
    (directory / f"{name}_answers").mkdir(parents=True, exist_ok=True)
    manifest = directory / f"{name}.jsonl"
    with manifest.open("w") as out:
        for i in range(count):
            label = int(rng.integers(len(WORDS)))
            audio = Path(name) / f"{i:05d}.wav"
            soundfile.write(directory / audio, tone(label, float(rng.uniform(1.0, 4.0)), rng), SAMPLE_RATE)
            answer = Path(f"{name}_answers") / f"{i:05d}.wav"
            soundfile.write(directory / answer, spoken_units(toy_units(label)), SAMPLE_RATE)
            record = {
                "id": f"{name}-{i:05d}",
                "audio": str(audio),
                "instruction": "Which tone is this?",
                "response": f"The tone is {WORDS[label]}.",
                "units": toy_units(label),
                "response_audio": str(answer),
                "unit_durations": [UNIT_FRAMES] * len(toy_units(label)),
            }
            out.write(json.dumps(record) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--eval", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    for name, count in (("train", args.train), ("eval", args.eval)):
        print(f"wrote {write_split(args.directory, name, count, rng)} ({count} clips)")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
