"""Does the model speak? ASR-WER of its spoken answers, held-out and training, beside resynthesis and the ceiling.

    python -m omni.eval.spoken_answers --out runs/spoken_answers          # the demo's runs on this machine
    python -m omni.eval.spoken_answers --model M --decoder D --vocoder V --heldout H.jsonl --train T.jsonl \\
        --items 40 --omegas 10 --out runs/spoken_answers

For the first `items` spoken questions of each split the model answers (greedy) and speaks while writing,
streamed at each Omega; the offline rendering vocodes the same units whole (streaming and offline decoding
give the same units). Whisper transcribes every spoken answer and the word error rate against the model's
own text answer is the figure (ASR-WER). Beside it, on the same records: the TTS ceiling (Whisper on the
data's spoken answer against its text) and the vocoder's resynthesis of the data's reference units, what
the decoder's units could reach at best through this vocoder. Training questions against held-out ones
tell fit from generalisation. Each split gets a verdict, so a stalled decoder (almost no units) or babble
(ASR-WER >= 0.8) shows on the first 40 answers. Writes spoken_answers.json, spoken_answers.md and
listen/ (for the first held-out questions: the question, the spoken answers and listen.md beside them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from tqdm.auto import tqdm

from omni.audio import SAMPLE_RATE, load_audio
from omni.cli import command_parser
from omni.config import DEMO_PARTS
from omni.data import SpeechInstructionDataset
from omni.eval.asr import Ear, wer
from omni.speech_generator import SpeechGenerator, load_parts
from omni.vocoder.base import Vocoder, resample

STALLED_LENGTH_RATIO = 0.2  # fewer units per word than this share of the data's: the decoder says (almost) nothing
BABBLE_WER = 0.8  # at or above this ASR-WER the speech carries (almost) none of the answer
INTELLIGIBLE_WER = 0.3  # at or under this a listener follows the answer
REFERENCE = ("resynthesis", "ceiling")  # renderings of the data's answer, scored against its text


def answer(
    generator: SpeechGenerator, clips: list[np.ndarray], omega: int, max_new_tokens: int, batch_size: int
) -> list[dict[str, Any]]:
    """Text, units and 16 kHz speech of each question, streamed at `omega`, in batches."""
    answers: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(clips), batch_size), desc=f"answering, omega {omega}", unit="batch", leave=False):
        done = {}
        for event in generator.batch(clips[start : start + batch_size], omega, max_new_tokens):
            if event.kind == "done":
                done[event.request] = event
        for i in sorted(done):
            e = done[i]
            speech = resample(e.audio, e.sample_rate, SAMPLE_RATE) if len(e.audio) else np.zeros(0, np.float32)
            answers.append({"text": e.text, "units": e.units, "speech": speech})
    return answers


def verdict(wer: float, length_ratio: float) -> str:
    if length_ratio < STALLED_LENGTH_RATIO:
        return "stalled"
    if wer >= BABBLE_WER:
        return "babble"
    return "intelligible" if wer <= INTELLIGIBLE_WER else "partly intelligible"


def evaluate_split(
    generator: SpeechGenerator,
    vocoder: Vocoder,
    ear: Ear,
    manifest: Path,
    items: int,
    omegas: list[int],
    max_new_tokens: int,
    batch_size: int,
    references: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The split's figures and one row per question (its audio kept for the listening page); `references` adds the
    resynthesis and the ceiling (they change with the vocoder and the data, not with the decoder)."""
    data = SpeechInstructionDataset(manifest, require_response=False)
    count = min(items, len(data))
    rows = [dict(data.rows[i]) for i in range(count)]
    clips = [data[i].audio for i in range(count)]
    renderings: dict[str, list[np.ndarray]] = {}
    answers: list[dict[str, Any]] = []
    for omega in omegas:
        streamed = answer(generator, clips, omega, max_new_tokens, batch_size)
        renderings[f"omega_{omega}"] = [a["speech"] for a in streamed]
        answers = answers or streamed
    renderings["offline"] = [
        resample(vocoder.synthesize(a["units"])[0], vocoder.sample_rate, SAMPLE_RATE)
        if a["units"]
        else np.zeros(0, np.float32)
        for a in answers
    ]
    has_units = all(r.get("units") for r in rows)
    has_speech = all(r.get("response_audio") for r in rows)
    if has_units and references:  # the data's own units through the vocoder: the best the decoder's units could sound
        renderings["resynthesis"] = [
            resample(vocoder.synthesize(r["units"])[0], vocoder.sample_rate, SAMPLE_RATE) for r in rows
        ]
    if has_speech and references:
        renderings["ceiling"] = [load_audio(data.audio_path(r["response_audio"])) for r in rows]
    transcripts = {
        name: [ear(audio) for audio in tqdm(audios, desc=f"{manifest.stem}: {name}", leave=False)]
        for name, audios in renderings.items()
    }
    texts = [a["text"] for a in answers]
    responses = [r.get("response") or "" for r in rows]
    figures = {name: wer(responses if name in REFERENCE else texts, transcripts[name]) for name in renderings}
    ours = sum(len(a["units"]) for a in answers) / max(1, sum(len(t.split()) for t in texts))
    theirs = sum(len(r["units"]) for r in rows) / max(1, sum(len(t.split()) for t in responses)) if has_units else 0
    length_ratio = ours / theirs if theirs else float("nan")
    spoken = max(figures[name] for name in renderings if name not in REFERENCE)
    summary = {
        "items": count,
        "asr_wer": figures,
        "units_per_word": ours,
        "length_ratio": length_ratio,
        "answers_without_audio": sum(not len(a["speech"]) for a in answers),
        "verdict": verdict(spoken, length_ratio) if theirs else "unknown (the records carry no units)",
    }
    out_rows = []
    for i, (row, a) in enumerate(zip(rows, answers, strict=True)):
        out_rows.append(
            {
                "id": row.get("id", str(i)),
                "instruction": row.get("instruction"),
                "text_answer": a["text"],
                "units": len(a["units"]),
                "transcripts": {name: transcripts[name][i] for name in transcripts},
                "audio": {"question": clips[i]} | {name: renderings[name][i] for name in renderings},
            }
        )
    return summary, out_rows


def listening_page(rows: list[dict[str, Any]], out: Path) -> Path:
    """Wavs of each question and its spoken answers, and a markdown page to listen and read side by side."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Listen: held-out questions and the spoken answers", ""]
    for number, row in enumerate(rows, start=1):
        lines += [f"## {number}. {row['instruction'] or row['id']}", ""]
        names = [n for n in row["audio"] if n not in REFERENCE]
        for name in names:
            path = out / f"{number:02d}_{name}.wav"
            soundfile.write(path, row["audio"][name], SAMPLE_RATE)
            label = "question" if name == "question" else f"answer, {name.replace('_', ' ')}"
            heard_text = row["transcripts"].get(name)
            lines.append(f'- {label}: <audio controls src="{path.name}"></audio> [{path.name}]({path.name})')
            if heard_text is not None:
                lines.append(f"  - Whisper heard: \u201c{heard_text}\u201d")
        lines += ["", f"Text answer: \u201c{row['text_answer']}\u201d", ""]
    page = out / "listen.md"
    page.write_text("\n".join(lines))
    return page


def markdown(report: dict[str, Any]) -> str:
    names = report["renderings"]
    head = " | ".join(f"ASR-WER {n.replace('_', ' ')}" for n in names)
    lines = [
        f"Spoken answers: {report['items']} questions per split, Whisper `{report['whisper']}` as the ear; ASR-WER of "
        "the spoken answer against the model's own text answer; resynthesis (the data's reference units through the "
        "vocoder) and the TTS ceiling (the data's spoken answer) against the data's answer text.",
        "",
        f"| split | answers | {head} | length ratio (units per word / data's) | verdict |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    for split, s in report["splits"].items():
        cells = " | ".join(f"{s['asr_wer'][n]:.3f}" if n in s["asr_wer"] else "" for n in names)
        lines.append(f"| {split} | {s['items']} | {cells} | {s['length_ratio']:.2f} | {s['verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, default=DEMO_PARTS[0])
    parser.add_argument("--decoder", type=Path, default=DEMO_PARTS[1])
    parser.add_argument("--vocoder", type=Path, default=DEMO_PARTS[2])
    parser.add_argument("--heldout", type=Path, default=Path("data/demo/units/heldout.jsonl"))
    parser.add_argument("--train", default="data/demo/units/train.jsonl", help="training questions; '' for none")
    parser.add_argument("--whisper", default=".cache/assets/whisper_base.pt", help="the ear")
    parser.add_argument("--items", type=int, default=40, help="questions per split")
    parser.add_argument("--omegas", type=int, nargs="+", default=[10], help="streamed chunk sizes")
    parser.add_argument("--listen", type=int, default=10, help="held-out questions on the listening page")
    parser.add_argument(
        "--no-references", dest="references", action="store_false", help="skip resynthesis and ceiling (decoders alone)"
    )
    parser.add_argument("--lookahead", type=int, default=0, help="units each chunk holds back for the next's context")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if any(o <= 0 for o in args.omegas):
        raise ValueError(f"--omegas are streamed chunk sizes (> 0); offline is always measured, got {args.omegas}")
    model, decoder, vocoder = load_parts(args.model, args.decoder, args.vocoder, args.device)
    generator = SpeechGenerator(model, decoder, vocoder, lookahead_units=args.lookahead)
    ear = Ear.load(args.whisper, args.device)
    splits = {"held-out": args.heldout} | ({"training": Path(args.train)} if args.train else {})
    report: dict[str, Any] = {
        "items": args.items,
        "lookahead_units": args.lookahead,
        "whisper": Path(args.whisper).stem,
        "renderings": [f"omega_{o}" for o in args.omegas] + ["offline"] + (list(REFERENCE) if args.references else []),
        "splits": {},
    }
    examples: dict[str, list[dict[str, Any]]] = {}
    for split, manifest in splits.items():
        report["splits"][split], rows = evaluate_split(
            generator,
            vocoder,
            ear,
            manifest,
            args.items,
            args.omegas,
            args.max_new_tokens,
            args.batch_size,
            args.references,
        )
        examples[split] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    page = listening_page(examples["held-out"][: args.listen], args.out / "listen")
    with (args.out / "answers.jsonl").open("w") as f:
        for split, rows in examples.items():
            kept = ({"split": split} | {k: v for k, v in r.items() if k != "audio"} for r in rows)
            f.writelines(json.dumps(row) + "\n" for row in kept)
    (args.out / "spoken_answers.json").write_text(json.dumps(report, indent=2))
    (args.out / "spoken_answers.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out}/spoken_answers.json, spoken_answers.md, answers.jsonl and {page}")
    return report


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
