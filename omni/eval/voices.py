"""Stage 1 on voices it never trained on: does the model answer the speech, or the data's voices?

    python -m omni.eval.voices --model runs/stage1_demo/model --trained data/demo/heldout.jsonl \\
        --train-data data/demo/train.jsonl --limit 50 --out runs/stage1_demo/eval/voices \\
        --heldout flite_slt=data/voices/flite_slt/train.jsonl piper_joe=data/voices/piper_joe/train.jsonl \\
        --human data/voices/human/records.jsonl

The questions: the first `--limit` first-turn questions of `--trained` (spoken by the training set's voices), and
the same questions spoken by each voice or engine held out of training (`make eval-voices` builds them with the
data builder; a held-out voice that occurs among `--train-data`'s records is refused: it would not be held out).
For each set the trained model answers the speech, and the Whisper-base cascade (Whisper transcribes, the LLM
before stage 1 answers the transcript) answers it too; ROUGE-L against the data's answer and against the
model's own LLM answering the question's text. Real people (`--human`, recordings with transcripts and no written
answer) are scored against the text answer to the transcript. The figure is the gap: ROUGE-L against the data's
answer on the trained voices minus that on each held-out voice. Writes voices.json and voices.md.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from omni.cli import command_parser
from omni.data import Example, SpeechInstructionDataset
from omni.encoder import whisper_checkpoint
from omni.eval.asr import wer
from omni.eval.text_parity import (
    rouge_l,
    speech_answers,
    text_answers,
    text_system_prompt,
    untrained_like,
    whisper_transcriber,
)
from omni.model import OmniModel

TRAINED = "trained voices"


def first_turns(path: Path, limit: int | None, ids: list[str] | None = None) -> list[Example]:
    """The set's first-turn questions: its first `limit`, or those with `ids` in that order (missing ones left out)."""
    data = SpeechInstructionDataset(path, require_response=False)
    order = {str(row.get("id")): i for i, row in enumerate(data.rows) if not row.get("history")}
    chosen = list(order)[:limit] if ids is None else [i for i in ids if i in order]
    return [data[order[i]] for i in chosen]


def voices_of(path: Path) -> set[str]:
    return {str(row["voice"]) for row in map(json.loads, path.read_text().splitlines()) if row.get("voice")}


def score(speech: list[str], cascade: list[str], text: list[str], examples: list[Example]) -> dict:
    """ROUGE-L of the model's and the cascade's answers against the text answers and, where written, the data's."""
    written = [(s, c, e.response) for s, c, e in zip(speech, cascade, examples, strict=True) if e.response]

    def mean(pairs: list[tuple[str, str]]) -> float | None:
        return round(statistics.fmean(rouge_l(a, b) for a, b in pairs), 4) if pairs else None

    return {
        "items": len(examples),
        "rouge_l_vs_reference": mean([(s, r) for s, _, r in written]),
        "rouge_l_vs_text": mean(list(zip(speech, text, strict=True))),
        "cascade_rouge_l_vs_reference": mean([(c, r) for _, c, r in written]),
        "cascade_rouge_l_vs_text": mean(list(zip(cascade, text, strict=True))),
    }


def markdown(results: dict[str, dict]) -> str:
    columns = list(next(iter(results.values())))
    lines = ["| questions spoken by | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in results.items():
        cells = ["" if row.get(c) is None else f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                 for c in columns]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a trained model directory (train.output_dir/model)")
    parser.add_argument("--trained", type=Path, required=True, help="held-out questions in the training voices")
    parser.add_argument("--heldout", nargs="*", default=[], metavar="NAME=MANIFEST", help="the same, other voices")
    parser.add_argument("--human", type=Path, default=None, help="real recordings with transcripts (no answers)")
    parser.add_argument("--train-data", type=Path, default=None, help="the training manifest, to check voices")
    parser.add_argument("--whisper", default=None, help="the cascade's Whisper checkpoint (default: the encoder's)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=50, help="first-turn questions per set")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    sets = dict(item.split("=", 1) for item in args.heldout)
    for name, manifest in sets.items():
        if not Path(manifest).is_file():
            raise FileNotFoundError(f"--heldout {name}: no manifest {manifest} (make eval-voices builds it)")
        if args.train_data is not None and (seen := voices_of(Path(manifest)) & voices_of(args.train_data)):
            raise ValueError(f"--heldout {name}: voice(s) {sorted(seen)} occur in {args.train_data}: not held out")

    torch.manual_seed(0)
    trained = first_turns(args.trained, args.limit)
    questions = {TRAINED: trained}
    questions |= {name: first_turns(Path(path), None, [e.id for e in trained]) for name, path in sets.items()}
    if args.human is not None:
        questions["people (pocketsphinx recordings)"] = first_turns(args.human, args.limit)
    model = OmniModel.from_pretrained(args.model)
    model.eval()
    before = untrained_like(args.model)  # its LLM is the one before stage 1: the cascade's
    encoder = before.config.encoder
    checkpoint = args.whisper or whisper_checkpoint(encoder.name_or_path, encoder.download_root)
    transcribe = whisper_transcriber(checkpoint, next(model.parameters()).device)
    system = text_system_prompt(args.trained, None)
    texts: dict[str, str] = {}  # question text -> the model's LLM's answer, asked once for all sets
    results, examples_out = {}, []
    for name, examples in questions.items():
        new = sorted({e.instruction for e in examples} - set(texts))
        texts |= dict(zip(new, text_answers(model, new, system, args.batch_size, args.max_new_tokens), strict=True))
        speech = speech_answers(model, examples, args.batch_size, args.max_new_tokens)
        heard = [h.strip() for h in transcribe(examples)]
        cascade = text_answers(before, heard, system, args.batch_size, args.max_new_tokens)
        text = [texts[e.instruction] for e in examples]
        results[name] = score(speech, cascade, text, examples) | {
            "transcript_wer": round(wer([e.instruction for e in examples], heard), 4)
        }
        examples_out += [
            {"set": name, "id": e.id, "instruction": e.instruction, "reference": e.response, "speech_answer": s,
             "text_answer": t, "transcript": h, "cascade_answer": c}
            for e, s, t, h, c in zip(examples, speech, text, heard, cascade, strict=True)
        ]  # fmt: skip
    base = results[TRAINED]["rouge_l_vs_reference"]
    for row in results.values():
        mine = row["rouge_l_vs_reference"]
        row["gap_vs_trained_voices"] = None if base is None or mine is None else round(base - mine, 4)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "voices.json").write_text(json.dumps(results, indent=2))
    (args.out / "voices.md").write_text(markdown(results))
    with (args.out / "examples.jsonl").open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in examples_out)
    print(markdown(results))
    print(f"wrote {args.out}/voices.json, voices.md, examples.jsonl")
    return results


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
