"""Spoken-style instructions from templates, with a held-out split nothing in training overlaps.

    python -m data_recipes.demo.instructions --out data/demo/instructions.jsonl --max-heldout 200

Each family has phrasings and values. The last phrasing of every family and a fixed share of its
values are held out: a held-out instruction uses a held-out phrasing, a held-out value, or both, so
the evaluation asks questions whose wording or subject the model never heard in training. A share of
the instructions (DIALOGUE_SHARE) start a two-turn dialogue: a follow-up question of their family that
only makes sense after them ("And what language do they speak there?"), answered in the build with the
first turn in context; held-out instructions get one more often (HELD_OUT_DIALOGUE_SHARE), so the dialogue
evaluation has enough second turns. The JSONL written here is the source of the demo's build
(`data_recipes/configs/demo.yaml`): `id`, `instruction`, `family`, `held_out`, and `follow_ups` where one is.

    python -m data_recipes.demo.instructions --samples 3 --out data/demo_answers/instructions.jsonl

`--samples N` writes a source of extra answers for stage 2 instead: every training instruction N times
(ids `<id>-s<k>`), no held-out one and no dialogue, to be answered with sampling (`make answers-demo`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from omni.atomic import write_atomic
from omni.cli import command_parser

NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]

FAMILIES: dict[str, tuple[list[str], list[str]]] = {
    "capital": (
        [
            "What is the capital of {}?",
            "Which city is the capital of {}?",
            "Can you tell me the capital city of {}?",
            "Name the capital of {}.",
            "Do you know what the capital of {} is?",
        ],
        [
            "France",
            "Germany",
            "Italy",
            "Spain",
            "Portugal",
            "Japan",
            "China",
            "India",
            "Brazil",
            "Canada",
            "Mexico",
            "Egypt",
            "Kenya",
            "Nigeria",
            "Australia",
            "Russia",
            "Norway",
            "Sweden",
            "Finland",
            "Denmark",
            "Poland",
            "Greece",
            "Turkey",
            "Ireland",
            "Austria",
            "Belgium",
            "Peru",
            "Chile",
            "Argentina",
            "Colombia",
            "Cuba",
            "Thailand",
            "Vietnam",
            "Indonesia",
            "Iran",
            "Iraq",
            "Israel",
            "Morocco",
            "Ghana",
            "Ethiopia",
            "South Korea",
            "the Netherlands",
            "Switzerland",
            "Hungary",
            "Ukraine",
            "Scotland",
            "Wales",
            "England",
        ],
    ),
    "define": (
        [
            "What does the word {} mean?",
            "Can you explain what {} means?",
            "What is the meaning of {}?",
            "Please define {} for me.",
            "Tell me in simple words what {} is.",
        ],
        [
            "gravity",
            "democracy",
            "photosynthesis",
            "friendship",
            "a volcano",
            "a rainbow",
            "an island",
            "a planet",
            "a library",
            "a museum",
            "a vaccine",
            "a battery",
            "electricity",
            "a calendar",
            "a bridge",
            "a desert",
            "a glacier",
            "an orchestra",
            "a pharmacy",
            "a telescope",
            "a microscope",
            "a dictionary",
            "a compass",
            "an engine",
            "a river",
            "a forest",
            "a hurricane",
            "an earthquake",
            "a recipe",
            "a poem",
            "a novel",
            "a theater",
            "a parliament",
            "a passport",
            "an airport",
            "a harbor",
            "a lighthouse",
            "a satellite",
            "a thermometer",
            "a skeleton",
            "a muscle",
            "a vitamin",
            "a habit",
            "courage",
            "patience",
            "honesty",
            "kindness",
            "curiosity",
            "a hobby",
            "a holiday",
            "a neighbor",
            "a shadow",
            "an echo",
            "a fossil",
            "a mammal",
            "a reptile",
            "an insect",
            "a seed",
            "a cloud",
            "a tide",
            "a comet",
            "an eclipse",
        ],
    ),
    "opposite": (
        [
            "What is the opposite of {}?",
            "Which word means the opposite of {}?",
            "What word is the reverse of {}?",
            "Give me the opposite of the word {}.",
        ],
        [
            "hot",
            "big",
            "fast",
            "happy",
            "early",
            "light",
            "strong",
            "young",
            "rich",
            "loud",
            "open",
            "full",
            "hard",
            "high",
            "long",
            "wet",
            "clean",
            "easy",
            "empty",
            "near",
            "thick",
            "sweet",
            "brave",
            "quiet",
            "true",
            "inside",
            "before",
            "above",
            "first",
            "win",
            "buy",
            "push",
            "begin",
            "remember",
            "arrive",
            "accept",
            "increase",
            "friend",
            "day",
            "summer",
            "north",
            "left",
            "up",
            "always",
            "everything",
            "ancient",
        ],
    ),
    "arithmetic": (
        [
            "What is {a} plus {b}?",
            "How much is {a} times {b}?",
            "What do you get if you take {b} away from {a}?",
            "Please add {a} and {b}.",
            "If I have {a} apples and buy {b} more, how many apples do I have?",
        ],
        [],  # filled from number pairs below
    ),
    "animal": (
        [
            "What sound does a {} make?",
            "Where does a {} usually live?",
            "What does a {} like to eat?",
            "How big is a {}?",
            "Can you tell me something interesting about the {}?",
        ],
        [
            "dog",
            "cat",
            "cow",
            "horse",
            "sheep",
            "pig",
            "duck",
            "lion",
            "tiger",
            "elephant",
            "monkey",
            "owl",
            "frog",
            "bee",
            "snake",
            "wolf",
            "bear",
            "rabbit",
            "dolphin",
            "whale",
            "penguin",
            "eagle",
            "camel",
            "giraffe",
            "zebra",
            "kangaroo",
            "turtle",
            "shark",
            "parrot",
            "goat",
            "chicken",
            "mouse",
            "fox",
            "deer",
            "bat",
        ],
    ),
    "color": (
        [
            "What color is {}?",
            "Which color do you usually see on {}?",
            "Do you know the color of {}?",
            "Tell me the color of {}.",
        ],
        [
            "the sky on a clear day",
            "grass",
            "snow",
            "a banana",
            "a ripe tomato",
            "an orange",
            "coal",
            "milk",
            "a lemon",
            "the sun",
            "a strawberry",
            "a carrot",
            "chocolate",
            "a pumpkin",
            "the ocean",
            "a cucumber",
            "a school bus",
            "a fire truck",
            "a polar bear",
            "a crow",
            "a blueberry",
            "an eggplant",
            "a lime",
            "a cherry",
            "a cloud",
            "sand",
            "a flamingo",
            "blood",
            "a leaf in autumn",
            "a pine tree",
        ],
    ),
    "howmany": (
        [
            "How many {} are there in {}?",
            "Do you know how many {} there are in {}?",
            "Count the {} in {} for me.",
            "Tell me how many {} make {}.",
        ],
        [
            "days|a week",
            "months|a year",
            "hours|a day",
            "minutes|an hour",
            "seconds|a minute",
            "legs|a spider",
            "legs|a dog",
            "wheels|a bicycle",
            "wheels|a car",
            "sides|a triangle",
            "sides|a square",
            "players|a football team",
            "strings|a guitar",
            "days|a leap year",
            "weeks|a year",
            "continents|the world",
            "planets|the solar system",
            "colors|a rainbow",
            "letters|the English alphabet",
            "eggs|a dozen",
            "years|a century",
            "years|a decade",
            "centimeters|a meter",
            "grams|a kilogram",
            "wings|a bird",
            "hearts|an octopus",
            "cards|a deck",
            "sides|a hexagon",
        ],
    ),
    "howto": (
        [
            "How do I {}?",
            "What is a good way to {}?",
            "Can you give me a tip to {}?",
            "Please help me {}.",
            "What should I do to {}?",
        ],
        [
            "sleep better",
            "learn a new language",
            "make a cup of tea",
            "save money",
            "stay calm before an exam",
            "keep my plants alive",
            "cook rice",
            "remember names",
            "wake up early",
            "stay focused while studying",
            "make new friends",
            "boil an egg",
            "keep my room tidy",
            "start running",
            "drink more water",
            "write a good email",
            "prepare for a job interview",
            "clean a window",
            "bake bread",
            "plan a trip",
            "take better photos",
            "relax after work",
            "read more books",
            "be more patient",
            "keep warm in winter",
            "cool down on a hot day",
            "care for a cat",
            "learn to swim",
            "stop procrastinating",
            "eat healthier",
        ],
    ),
    "category": (
        ["Can you name a few {}?", "Tell me some examples of {}.", "Which {} do you know?", "What are some common {}?"],
        [
            "fruits",
            "vegetables",
            "musical instruments",
            "sports",
            "flowers",
            "birds",
            "farm animals",
            "sea animals",
            "colors",
            "vehicles",
            "kitchen tools",
            "planets",
            "board games",
            "breakfast foods",
            "jobs",
            "languages",
            "desserts",
            "trees",
            "metals",
            "insects",
            "clothes",
            "furniture",
            "drinks",
            "hobbies",
            "school subjects",
            "winter sports",
            "spices",
            "tools",
            "holidays",
            "shapes",
        ],
    ),
    "why": (
        ["Why is {}?", "Can you explain why {}?", "Tell me the reason why {}.", "Do you know why {}?"],
        [
            "the sky blue",
            "the sea salty",
            "ice slippery",
            "the sun hot",
            "exercise good for us",
            "sleep important",
            "the moon bright at night",
            "fire hot",
            "water wet",
            "bread soft",
            "snow white",
            "the desert dry",
            "reading important",
            "breakfast important",
            "recycling useful",
            "the grass green",
            "thunder loud",
            "honey sweet",
            "the ocean deep",
            "music relaxing",
        ],
    ),
}

HELD_OUT_VALUE_SHARE = 0.15
DIALOGUE_SHARE = 0.12  # instructions that get a follow-up question (a second turn that needs the first)
HELD_OUT_DIALOGUE_SHARE = 0.5  # held-out instructions that get one: enough second turns for the dialogue evaluation
FOLLOW_UPS: dict[str, list[str]] = {  # per family: questions that lean on the first turn's subject
    "capital": ["And what language do they speak there?", "Which continent is it on?", "Is it a big country?"],
    "define": ["Can you use it in a sentence?", "What is another word for it?"],
    "opposite": ["And what is the opposite of that?", "Can you use both in a sentence?"],
    "arithmetic": ["And if you add one more?", "Is that an even number?"],
    "animal": ["Where does it live?", "What does it eat?"],
    "color": ["Why is it that color?", "What else has that color?"],
    "howmany": ["And how many in two of them?", "Is that a lot?"],
    "howto": ["How long does that take?", "Is it hard to do?"],
    "category": ["Which one is your favourite?", "Can you name one more?"],
}


@dataclass(frozen=True)
class Instruction:
    id: str
    family: str
    text: str
    held_out: bool
    follow_up: str | None = None  # the second question of its dialogue, if it starts one


def _arithmetic_values() -> list[str]:
    return [f"{a}|{b}" for a in NUMBERS[2:] for b in NUMBERS[1:] if NUMBERS.index(b) < NUMBERS.index(a)]


def _fill(template: str, value: str) -> str:
    parts = value.split("|")
    if "{a}" in template:
        return template.format(a=parts[0], b=parts[1])
    return template.format(*parts)


def build_instructions(seed: int = 0) -> list[Instruction]:
    """Every instruction, marked held-out or not, in a fixed shuffled order."""
    rng = random.Random(seed)
    dialogue_rng = random.Random(f"dialogues-{seed}")  # its own stream: the single-turn set stays as it was
    held_out_rng = random.Random(f"held-out-dialogues-{seed}")  # more held-out ones; the training set stays as it was
    extra = (HELD_OUT_DIALOGUE_SHARE - DIALOGUE_SHARE) / (1 - DIALOGUE_SHARE)
    items: list[Instruction] = []
    for family, (templates, values) in FAMILIES.items():
        values = values or _arithmetic_values()
        shuffled = sorted(values)
        rng.shuffle(shuffled)
        held_values = set(shuffled[: max(1, round(HELD_OUT_VALUE_SHARE * len(shuffled)))])
        held_template = templates[-1]
        for t, template in enumerate(templates):
            for value in values:
                held = template == held_template or value in held_values
                item_id = f"{family}-{t}-{values.index(value):03d}"
                follow = FOLLOW_UPS.get(family) if dialogue_rng.random() < DIALOGUE_SHARE else None
                question = follow[dialogue_rng.randrange(len(follow))] if follow else None
                if held and question is None and family in FOLLOW_UPS and held_out_rng.random() < extra:
                    question = held_out_rng.choice(FOLLOW_UPS[family])
                items.append(Instruction(item_id, family, _fill(template, value), held, question))
    rng.shuffle(items)
    return items


def _write_rows(out: Path, rows: list[dict]) -> int:
    """The rows as JSON lines into `out`, all at once (a partial file renamed into place)."""
    write_atomic(out, "".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def write_source(out: Path, max_train: int | None = None, max_heldout: int | None = None) -> int:
    """The demo's instructions as a builder source: every training one and the first `max_heldout` held out."""
    items = build_instructions()
    chosen = [i for i in items if not i.held_out][:max_train] + [i for i in items if i.held_out][:max_heldout]
    rows = [
        {"id": i.id, "instruction": i.text, "family": i.family, "held_out": i.held_out}
        | ({"follow_ups": [i.follow_up]} if i.follow_up else {})
        for i in chosen
    ]
    return _write_rows(out, rows)


def write_samples_source(out: Path, samples: int) -> int:
    """Every training instruction `samples` times, ids `<id>-s<k>`: a source of sampled answers for stage 2."""
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    training = [i for i in build_instructions() if not i.held_out]
    rows = [
        {"id": f"{i.id}-s{k}", "instruction": i.text, "family": i.family, "held_out": False}
        for k in range(samples)
        for i in training
    ]
    return _write_rows(out, rows)


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/demo/instructions.jsonl"))
    parser.add_argument("--max-train", type=int, default=None, help="training instructions kept (default all)")
    parser.add_argument("--max-heldout", type=int, default=200, help="held-out instructions kept")
    parser.add_argument("--samples", type=int, default=None, help="extra answers: each training instruction N times")
    args = parser.parse_args(argv)
    if args.samples is not None:
        written = write_samples_source(args.out, args.samples)
    else:
        written = write_source(args.out, args.max_train, args.max_heldout)
    print(f"wrote {written} instructions to {args.out}")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
