"""Stage-1 evaluation: does the model answer the spoken instruction as it answers the text?

    python -m omni.eval.text_parity --model runs/stage1_demo/model --data data/demo/heldout.jsonl \\
        --out runs/stage1_demo/eval --limit 100 --cascade

For each held-out item the model answers the speech, and its LLM answers the instruction text with
the text prompt the data was made with. Reported for the trained model and, in the same run, for the
untrained one (same encoder and LLM, fresh adaptor): exact match and ROUGE-L F1 between the speech
answer and three texts, and the held-out loss. The texts: the model's own text answer ("text"; a
LoRA or fully tuned LLM answers text differently after stage 1), the text answer of the LLM before
stage 1 ("base_text", what stage 1 trains toward, uncut), and the dataset's answer ("reference").

`--cascade` adds a third column, the ceiling of hearing: Whisper's own decoder (the full checkpoint
the encoder comes from) transcribes the speech and the LLM before stage 1 answers the transcript,
with the transcripts' exact-match rate and WER. A speech LLM hears through the same frozen encoder,
so it is unlikely to answer more instructions the way the text is answered than this cascade does.
Writes parity.json, parity.md and examples.jsonl.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from omni.chat import chat_answers
from omni.cli import command_parser
from omni.data import Example, SpeechCollator, SpeechInstructionDataset
from omni.encoder import whisper_checkpoint
from omni.eval.asr import Ear, wer, words
from omni.model import OmniModel, load_model_config


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over normalised words (longest common subsequence)."""
    a, b = words(candidate), words(reference)
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
    said = words(candidate)
    return bool(said) and said == words(reference)


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
    return scores(rows) | {"heldout_loss": heldout_loss(model, examples, batch_size)}, rows


def scores(rows: list[dict]) -> dict:
    """Exact match and ROUGE-L of each row's speech answer against its text, base-text and reference answers."""
    metrics: dict = {"items": len(rows)}
    for target, key in (("text", "text_answer"), ("base_text", "base_text_answer"), ("reference", "reference")):
        metrics[f"exact_match_vs_{target}"] = statistics.fmean(exact(r["speech_answer"], r[key]) for r in rows)
        metrics[f"rouge_l_vs_{target}"] = statistics.fmean(rouge_l(r["speech_answer"], r[key]) for r in rows)
    return metrics


def cascade(
    model: OmniModel,
    examples: list[Example],
    transcribe: Callable[[list[Example]], list[str]],
    system: str | None,
    batch_size: int,
    max_new_tokens: int,
    base_text: list[str] | None = None,
) -> tuple[dict, list[dict]]:
    """The LLM before stage 1 (`model`'s, untrained) answering what an ASR heard: a speech LLM hearing
    through the same encoder is unlikely to beat it, so it tells how much of the gap to parity is hearing.
    `base_text`: that LLM's answers to the typed instructions, if already made."""
    heard = [t.strip() for t in transcribe(examples)]
    answers = text_answers(model, heard, system, batch_size, max_new_tokens)
    instructions = [e.instruction for e in examples]
    text = base_text or text_answers(model, instructions, system, batch_size, max_new_tokens)
    rows = [
        {
            "id": e.id,
            "instruction": e.instruction,
            "transcript": h,
            "reference": e.response,
            "speech_answer": a,
            "text_answer": t,
            "base_text_answer": t,
        }
        for e, h, a, t in zip(examples, heard, answers, text, strict=True)
    ]
    metrics = scores(rows)
    metrics["transcript_exact"] = statistics.fmean(
        exact(h, e.instruction) for h, e in zip(heard, examples, strict=True)
    )
    metrics["transcript_wer"] = wer([e.instruction for e in examples], heard)
    return metrics, rows


def whisper_transcriber(checkpoint: str | Path, device: torch.device) -> Callable[[list[Example]], list[str]]:
    """openai-whisper's own greedy English decoding of each clip, with the full model (decoder included)."""
    ear = Ear.load(checkpoint, device)

    def transcribe(examples: list[Example]) -> list[str]:
        return [ear(e.audio) for e in tqdm(examples, desc="whisper transcripts")]

    return transcribe


def untrained_like(model_dir: Path, seed: int = 0) -> OmniModel:
    """The same encoder and LLM before stage 1: the config's base LLM, a fresh adaptor, LoRA not yet learned."""
    config = load_model_config(model_dir)
    torch.manual_seed(seed)
    return OmniModel.from_config(replace(config, llm=replace(config.llm, train="frozen")))


def markdown(results: dict[str, dict]) -> str:
    """One row per metric, one column per model."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in dict.fromkeys(k for n in names for k in results[n]):
        cells = [_cell(results[n].get(key)) for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def text_system_prompt(data_path: Path, given: str | None) -> str | None:
    if given is not None:
        return given
    report = data_path.parent / "report.json"
    return json.loads(report.read_text()).get("text_system_prompt") if report.is_file() else None


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a trained model directory (train.output_dir/model)")
    parser.add_argument("--data", type=Path, required=True, help="held-out manifest with instruction and response")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=100, help="evaluate the first N items")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--text-system-prompt", default=None, help="default: the one in the data's report.json")
    parser.add_argument(
        "--cascade",
        nargs="?",
        const="encoder",
        default=None,
        help="also the ASR cascade: Whisper (the model's encoder checkpoint, or this one) transcribes, the LLM answers",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dataset = SpeechInstructionDataset(args.data)
    examples = [dataset[i] for i in range(min(args.limit, len(dataset)))]  # audio read once for both models
    system = text_system_prompt(args.data, args.text_system_prompt)
    results, rows = {}, {}
    untrained = untrained_like(args.model)
    results["untrained"], rows["untrained"] = evaluate(
        untrained, examples, system, args.batch_size, args.max_new_tokens
    )
    base_text = [r["text_answer"] for r in rows["untrained"]]  # its LLM is the one before stage 1
    results["trained"], rows["trained"] = evaluate(
        OmniModel.from_pretrained(args.model), examples, system, args.batch_size, args.max_new_tokens, base_text
    )
    if args.cascade:
        encoder = untrained.config.encoder
        checkpoint = (
            whisper_checkpoint(encoder.name_or_path, encoder.download_root)
            if args.cascade == "encoder"
            else args.cascade
        )
        transcribe = whisper_transcriber(checkpoint, next(untrained.llm.parameters()).device)
        results["whisper_cascade"], rows["whisper_cascade"] = cascade(
            untrained, examples, transcribe, system, args.batch_size, args.max_new_tokens, base_text
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.json").write_text(json.dumps(results, indent=2))
    (args.out / "parity.md").write_text(markdown(results))
    with (args.out / "examples.jsonl").open("w") as f:
        for i, (trained, before) in enumerate(zip(rows["trained"], rows["untrained"], strict=True)):
            extra = {"untrained_speech_answer": before["speech_answer"]}
            if "whisper_cascade" in rows:
                heard = rows["whisper_cascade"][i]
                extra |= {"whisper_transcript": heard["transcript"], "whisper_cascade_answer": heard["speech_answer"]}
            f.write(json.dumps(trained | extra) + "\n")
    print(markdown(results))
    for row in rows["trained"][:5]:
        print(f"- {row['instruction']}\n  speech: {row['speech_answer']}\n  text:   {row['text_answer']}")
        if row["base_text_answer"] != row["text_answer"]:
            print(f"  text before stage 1: {row['base_text_answer']}")
    print(f"wrote {args.out}/parity.json, parity.md, examples.jsonl")
    return results


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
