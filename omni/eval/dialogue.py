"""Does the model use the conversation? Second turns of held-out dialogues, answered with and without the first.

    python -m omni.eval.dialogue --model runs/stage1_demo/model --data data/demo/heldout.jsonl --out OUT
    python -m omni.eval.dialogue --model M --data D.jsonl --items 100 --device cuda --out OUT

The records with `history` (a later turn of a dialogue, "And what language do they speak there?") are
answered from their speech twice: with the earlier turns in the prompt, as the model was trained (earlier
questions as speech or text, per its `prompt.history`), and alone. Each answer is scored against the
data's answer, which the text LLM wrote given the same history: exact match and ROUGE-L over words. The
gap between the two rows is what the history is worth. Writes dialogue.json, dialogue.md and
dialogue_answers.jsonl (every answer, both ways).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from omni.cli import command_parser
from omni.data import SpeechInstructionDataset
from omni.eval.text_parity import exact, rouge_l, speech_answers
from omni.model import OmniModel


def score(answers: list[str], references: list[str]) -> dict[str, float]:
    return {
        "exact_match": statistics.fmean(exact(a, r) for a, r in zip(answers, references, strict=True)),
        "rouge_l": statistics.fmean(rouge_l(a, r) for a, r in zip(answers, references, strict=True)),
    }


def markdown(report: dict) -> str:
    lines = [
        f"Second turns of {report['items']} dialogues of `{report['data']}`, answered from speech; scored against "
        "the data's answer (the text LLM's, given the same history). Earlier questions given as "
        f"{report['history_as']}.",
        "",
        "| prompt | exact match | ROUGE-L |",
        "|---|---|---|",
    ]
    for name, label in (("with_history", "with the earlier turns"), ("without_history", "the question alone")):
        s = report[name]
        lines.append(f"| {label} | {s['exact_match']:.3f} | {s['rouge_l']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="stage-1 model directory")
    parser.add_argument("--data", type=Path, required=True, help="held-out records; those with history are used")
    parser.add_argument("--items", type=int, default=100, help="dialogue turns evaluated at most")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    data = SpeechInstructionDataset(args.data)
    later = [i for i, history in enumerate(data.column("history")) if history][: args.items]
    if not later:
        raise ValueError(f"{args.data}: no record has a history (no later turn of a dialogue to evaluate)")
    model = OmniModel.from_pretrained(args.model).to(args.device).eval()
    examples = [data[i] for i in later]
    references = [e.response for e in examples]
    answers = {
        "with_history": speech_answers(model, examples, args.batch_size, args.max_new_tokens),
        "without_history": speech_answers(
            model, [replace(e, history=()) for e in examples], args.batch_size, args.max_new_tokens
        ),
    }
    report = {
        "data": str(args.data),
        "items": len(examples),
        "history_as": model.config.prompt.history,
        **{name: score(texts, references) for name, texts in answers.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "dialogue_answers.jsonl").open("w") as f:
        for i, e in enumerate(examples):
            earlier = [{"role": t.role, "text": t.text} for t in e.history]
            row = {"id": e.id, "history": earlier, "instruction": e.instruction, "reference": e.response}
            f.write(json.dumps(row | {name: texts[i] for name, texts in answers.items()}) + "\n")
    (args.out / "dialogue.json").write_text(json.dumps(report, indent=2))
    (args.out / "dialogue.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out}/dialogue.json, dialogue.md and dialogue_answers.jsonl")
    return report


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
