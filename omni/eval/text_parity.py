"""Stage-1 evaluation: does the model answer the spoken instruction as it answers the text?

    python -m omni.eval.text_parity --model runs/stage1_demo/model --data data/demo/heldout.jsonl \
        --out runs/stage1_demo/eval --limit 100

For each held-out item the model answers the speech, and its LLM answers the instruction text with
the text prompt the data was made with. Reported for the trained model and, in the same run, for the
untrained one (same encoder and LLM, fresh adaptor): exact match and ROUGE-L F1 between the speech
answer and three texts, and the held-out loss. The texts: the model's own text answer ("text"; a
LoRA or fully tuned LLM answers text differently after stage 1), the text answer of the LLM before
stage 1 ("base_text", what stage 1 trains toward, uncut), and the dataset's answer ("reference").
Writes parity.json, parity.md and examples.jsonl.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from omni.chat import chat_answers
from omni.data import Example, SpeechCollator, SpeechInstructionDataset
from omni.model import OmniModel, load_model_config


def normalize(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over normalized words (longest common subsequence)."""
    a, b = normalize(candidate), normalize(reference)
    if not a or not b:
        return 0.0  # an empty answer matches nothing
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def exact(candidate: str, reference: str) -> bool:
    words = normalize(candidate)
    return bool(words) and words == normalize(reference)


@torch.no_grad()
def speech_answers(model: OmniModel, examples: list[Example], batch_size: int, max_new_tokens: int) -> list[str]:
    collate = SpeechCollator.for_model(model, padding_side="left", with_response=False)
    answers = []
    for batch in tqdm(DataLoader(examples, batch_size=batch_size, collate_fn=collate), desc="speech answers"):
        answers += model.generate(batch, max_new_tokens=max_new_tokens)
    return [a.strip() for a in answers]


def text_answers(
    model: OmniModel, instructions: list[str], system: str | None, batch_size: int, max_new_tokens: int
) -> list[str]:
    eos = sorted(model.prompt.end_of_turn_ids)
    answers = []
    for start in tqdm(range(0, len(instructions), batch_size), desc="text answers"):
        chunk = instructions[start : start + batch_size]
        answers += chat_answers(model.llm, model.tokenizer, chunk, system, max_new_tokens, eos)
    return [a.strip() for a in answers]


@torch.no_grad()
def heldout_loss(model: OmniModel, examples: list[Example], batch_size: int) -> float:
    collate = SpeechCollator.for_model(model)
    losses = [model(b).loss.item() for b in DataLoader(examples, batch_size=batch_size, collate_fn=collate)]
    return statistics.fmean(losses)


def evaluate(
    model: OmniModel,
    examples: list[Example],
    system: str | None,
    batch_size: int,
    max_new_tokens: int,
    base_text: list[str] | None = None,
) -> tuple[dict, list[dict]]:
    """`base_text`: the text answers of the LLM before stage 1; None = this model's LLM is that LLM."""
    model.eval()
    speech = speech_answers(model, examples, batch_size, max_new_tokens)
    text = text_answers(model, [e.instruction for e in examples], system, batch_size, max_new_tokens)
    rows = [
        {
            "id": e.id,
            "instruction": e.instruction,
            "reference": e.response,
            "speech_answer": s,
            "text_answer": t,
            "base_text_answer": b,
        }
        for e, s, t, b in zip(examples, speech, text, base_text or text, strict=True)
    ]
    metrics: dict = {"items": len(rows)}
    for target, key in (("text", "text_answer"), ("base_text", "base_text_answer"), ("reference", "reference")):
        metrics[f"exact_match_vs_{target}"] = statistics.fmean(exact(r["speech_answer"], r[key]) for r in rows)
        metrics[f"rouge_l_vs_{target}"] = statistics.fmean(rouge_l(r["speech_answer"], r[key]) for r in rows)
    metrics["heldout_loss"] = heldout_loss(model, examples, batch_size)
    return metrics, rows


def untrained_like(model_dir: Path, seed: int = 0) -> OmniModel:
    """The same encoder and LLM before stage 1: the config's base LLM, a fresh adaptor, LoRA not yet learned."""
    config = load_model_config(model_dir)
    torch.manual_seed(seed)
    return OmniModel.from_config(replace(config, llm=replace(config.llm, train="frozen")))


def markdown(results: dict[str, dict]) -> str:
    """One row per metric, one column per model."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in results[names[0]]:
        cells = [
            f"{results[n][key]:.3f}" if isinstance(results[n][key], float) else str(results[n][key]) for n in names
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def text_system_prompt(data_path: Path, given: str | None) -> str | None:
    if given is not None:
        return given
    report = data_path.parent / "report.json"
    return json.loads(report.read_text()).get("text_system_prompt") if report.is_file() else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained model directory (train.output_dir/model)")
    parser.add_argument("--data", type=Path, required=True, help="held-out manifest with instruction and response")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=100, help="evaluate the first N items")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--text-system-prompt", default=None, help="default: the one in the data's report.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dataset = SpeechInstructionDataset(args.data)
    examples = [dataset[i] for i in range(min(args.limit, len(dataset)))]  # audio read once for both models
    system = text_system_prompt(args.data, args.text_system_prompt)
    results, rows = {}, {}
    results["untrained"], rows["untrained"] = evaluate(
        untrained_like(args.model), examples, system, args.batch_size, args.max_new_tokens
    )
    base_text = [r["text_answer"] for r in rows["untrained"]]  # its LLM is the one before stage 1
    results["trained"], rows["trained"] = evaluate(
        OmniModel.from_pretrained(args.model), examples, system, args.batch_size, args.max_new_tokens, base_text
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.json").write_text(json.dumps(results, indent=2))
    (args.out / "parity.md").write_text(markdown(results))
    with (args.out / "examples.jsonl").open("w") as f:
        for trained, untrained in zip(rows["trained"], rows["untrained"], strict=True):
            f.write(json.dumps(trained | {"untrained_speech_answer": untrained["speech_answer"]}) + "\n")
    print(markdown(results))
    for row in rows["trained"][:5]:
        print(f"- {row['instruction']}\n  speech: {row['speech_answer']}\n  text:   {row['text_answer']}")
        if row["base_text_answer"] != row["text_answer"]:
            print(f"  text before stage 1: {row['base_text_answer']}")
    print(f"wrote {args.out}/parity.json, parity.md, examples.jsonl")
    return results


if __name__ == "__main__":
    main()
