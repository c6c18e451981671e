"""Build the offline demo set: instructions -> LLM answers -> espeak-ng speech of both -> manifests.

    python -m data_recipes.demo.build --llm .cache/assets/smollm2-135m-instruct --out data/demo
    python -m data_recipes.demo.build --max-train 500 --max-heldout 50 --out data/demo_small

Each step is resumable: answers are appended to responses.jsonl as they come and wavs are written
atomically, so a rerun skips what exists. Instructions are spoken in many voices, answers in one
(`RESPONSE_VOICE`, the voice the speech decoder learns). The result is `train.jsonl` and `heldout.jsonl` in the
dataset format of `omni.data`, the same as `datasets` directories under `hf/`, and `report.json`
(counts, durations, voices, skipped items with reasons, time per step).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import soundfile
from tqdm.auto import tqdm

from data_recipes.demo.instructions import Instruction, build_instructions
from data_recipes.demo.responses import SYSTEM_PROMPT, Responder, speakable
from data_recipes.demo.speech import RESPONSE_VOICE, synthesize, voice_for


def select(items: list[Instruction], max_train: int | None, max_heldout: int | None) -> list[Instruction]:
    train = [i for i in items if not i.held_out][:max_train]
    heldout = [i for i in items if i.held_out][:max_heldout]
    return train + heldout


def answer(items: list[Instruction], llm: str, path: Path, batch_size: int) -> dict[str, dict]:
    """id -> {"raw", "response", "skip"}; only missing ids are generated."""
    done = {}
    if path.exists():
        done = {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r}
    todo = [i for i in items if i.id not in done]
    if todo:
        responder = Responder(llm)
        with path.open("a") as out, tqdm(total=len(todo), desc="answers") as bar:
            for index, raw in responder.answer_all([i.text for i in todo], batch_size):
                response, skip = speakable(raw)
                record = {"id": todo[index].id, "raw": raw, "response": response, "skip": skip}
                out.write(json.dumps(record) + "\n")
                out.flush()
                done[record["id"]] = record
                bar.update(1)
    return done


def speak(
    texts: dict[str, str], voices: dict[str, tuple[str, int]], wav_dir: Path, workers: int, desc: str
) -> dict[str, float]:
    """id -> duration in seconds, synthesizing only missing wavs."""
    wav_dir.mkdir(parents=True, exist_ok=True)

    def one(item_id: str) -> tuple[str, float]:
        path = wav_dir / f"{item_id}.wav"
        if path.exists():
            return item_id, soundfile.info(str(path)).duration
        return item_id, synthesize(texts[item_id], *voices[item_id], path)

    with ThreadPoolExecutor(workers) as pool:
        return dict(tqdm(pool.map(one, texts), total=len(texts), desc=desc))


def build(out: Path, llm: str, max_train: int | None, max_heldout: int | None, batch_size: int, workers: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    items = select(build_instructions(), max_train, max_heldout)
    answers = answer(items, llm, out / "responses.jsonl", batch_size)
    timings["answers_s"] = round(time.perf_counter() - start, 1)
    kept = [i for i in items if answers[i.id]["response"]]
    start = time.perf_counter()
    durations = speak(
        {i.id: i.text for i in kept}, {i.id: voice_for(i.id) for i in kept}, out / "wavs", workers, "speech"
    )
    timings["speech_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    response_durations = speak(
        {i.id: answers[i.id]["response"] for i in kept},
        dict.fromkeys((i.id for i in kept), RESPONSE_VOICE),
        out / "response_wavs",
        workers,
        "response speech",
    )
    timings["response_speech_s"] = round(time.perf_counter() - start, 1)
    splits: dict[str, list[dict]] = {"train": [], "heldout": []}
    for item in kept:
        voice, rate = voice_for(item.id)
        splits["heldout" if item.held_out else "train"].append(
            {
                "id": item.id,
                "audio": f"wavs/{item.id}.wav",
                "instruction": item.text,
                "response": answers[item.id]["response"],
                "family": item.family,
                "voice": voice,
                "rate": rate,
                "duration": round(durations[item.id], 3),
                "response_audio": f"response_wavs/{item.id}.wav",
                "response_duration": round(response_durations[item.id], 3),
            }
        )
    for name, records in splits.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        rows = [r | {key: str((out / r[key]).resolve()) for key in ("audio", "response_audio")} for r in records]
        datasets.Dataset.from_list(rows).save_to_disk(str(out / "hf" / name))
    skipped = [
        {"id": i.id, "instruction": i.text, "reason": answers[i.id]["skip"], "answer": answers[i.id]["raw"]}
        for i in items
        if not answers[i.id]["response"]
    ]
    report = {
        "llm": llm,
        "text_system_prompt": SYSTEM_PROMPT,
        "items": len(items),
        "kept": {name: len(r) for name, r in splits.items()},
        "hours": {name: round(sum(r["duration"] for r in rs) / 3600, 3) for name, rs in splits.items()},
        "families": {name: dict(Counter(r["family"] for r in rs)) for name, rs in splits.items()},
        "voices": dict(Counter(r["voice"] for rs in splits.values() for r in rs)),
        "response_voice": {"voice": RESPONSE_VOICE[0], "rate": RESPONSE_VOICE[1]},
        "response_hours": {
            name: round(sum(r["response_duration"] for r in rs) / 3600, 3) for name, rs in splits.items()
        },
        "skipped_reasons": dict(Counter(s["reason"] for s in skipped)),
        "skipped": skipped,
        "timings": timings,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default=".cache/assets/smollm2-135m-instruct", help="Hugging Face model directory")
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-heldout", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    report = build(args.out, args.llm, args.max_train, args.max_heldout, args.batch_size, args.workers)
    print(json.dumps({k: report[k] for k in ("kept", "hours", "skipped_reasons", "timings")}, indent=2))
    print(f"wrote {args.out}/train.jsonl, heldout.jsonl, hf/ and report.json")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
