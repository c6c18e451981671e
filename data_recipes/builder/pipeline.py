"""The build: each shard runs its records through the steps, then one merge writes omni's records.

    source -> filters -> [rewrite] -> answer -> instruction speech -> [answer speech] -> merge -> [units]

A record belongs to shard `sha1(id) mod num_shards`, so shards are disjoint and need no coordination: a Slurm
array, Ray or plain processes each run one (`--num-shards N --shard-index i`), then `merge` joins them.
Every step appends one line per record to its log in `work/shard-i-of-n/` (store.py), so a rerun does only
what is missing; a request or synthesis that failed is logged as a skip to retry, and is tried again by the
next run. A step fails the build only when every record it tried failed. Answers from a fixed (greedy) LLM
and voices chosen by a hash of the id make a sharded build give the same records as a single process.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import soundfile
from tqdm.auto import tqdm

from data_recipes.builder.config import BuildConfig
from data_recipes.builder.llm import ChatBackend, LLMError, make_backend
from data_recipes.builder.source import Dropped, SourceRecord, load_source
from data_recipes.builder.speakable import speakable
from data_recipes.builder.store import StepLog, write_atomic
from data_recipes.builder.tts import TTSConfig, TTSError, make_tts, pick_voice

WORK = "work"
DONE_FILE = "done.json"
INSTRUCTION_WAVS = "wavs"
ANSWER_WAVS = "response_wavs"
STEPS = ("rewrite", "answer", "speech", "answer_speech")


class StepFailed(RuntimeError):
    pass


def shard_of(record_id: str, num_shards: int) -> int:
    return int(hashlib.sha1(record_id.encode()).hexdigest(), 16) % num_shards


def file_name(record_id: str) -> str:
    """A safe file name for an id: kept as it is when it already is one, else cleaned and made unique by a hash."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", record_id) and not record_id.startswith("."):
        return record_id
    return re.sub(r"[^A-Za-z0-9_.-]", "_", record_id)[:80] + "-" + hashlib.sha1(record_id.encode()).hexdigest()[:8]


def is_heldout(record: SourceRecord, config: BuildConfig) -> bool:
    if config.source.heldout_field:
        return bool(record.fields.get("heldout"))
    digest = int(hashlib.sha1(f"heldout:{record.id}".encode()).hexdigest(), 16)
    return digest % 10_000 < config.split.heldout * 10_000


def work_dir(out: Path, shard_index: int, num_shards: int) -> Path:
    return out / WORK / f"shard-{shard_index:05d}-of-{num_shards:05d}"


def batched(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ShardBuild:
    """One shard's records through rewrite, answer and speech; `run` returns its summary."""

    def __init__(self, config: BuildConfig, shard_index: int = 0, num_shards: int = 1):
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"--shard-index {shard_index} is not in [0, {num_shards})")
        self.config = config
        self.out = Path(config.out)
        self.work = work_dir(self.out, shard_index, num_shards)
        records, _ = load_source(config.source, config.filters)
        self.records = [r for r in records if shard_of(r.id, num_shards) == shard_index]
        self.logs = {step: StepLog(self.work / f"{step}.jsonl") for step in STEPS}
        self._backend: ChatBackend | None = None
        self.timings: dict[str, float] = {}

    @property
    def backend(self) -> ChatBackend:
        if self._backend is None:  # loaded only when a step has work for it
            self._backend = make_backend(self.config.llm)
        return self._backend

    def run(self) -> dict[str, Any]:
        c = self.config
        alive = self.records
        if c.rewrite.enabled:
            alive = self._llm_step("rewrite", alive, c.rewrite.system, c.rewrite.template, self._finish_rewrite)
        given = [r for r in alive if r.fields.get("response")]
        asked = [r for r in alive if not r.fields.get("response")]
        answered = self._llm_step("answer", asked, c.answer.system, c.answer.template, self._finish_answer)
        alive = sorted(given + answered, key=lambda r: r.index)
        alive = self._speech_step("speech", alive, c.instruction_tts, INSTRUCTION_WAVS, self.spoken_instruction)
        if c.speak_answers:
            self._speech_step("answer_speech", alive, c.answer_tts, ANSWER_WAVS, self.answer_text)
        summary = {"records": len(self.records), "timings_s": self.timings}
        write_atomic(self.work / DONE_FILE, json.dumps(summary, indent=2))
        return summary

    # ---- texts each step works on --------------------------------------------------------------
    def spoken_instruction(self, record: SourceRecord) -> str:
        rewrite = self.logs["rewrite"].entries.get(record.id)
        return rewrite["text"] if self.config.rewrite.enabled and rewrite else record.instruction

    def answer_text(self, record: SourceRecord) -> str:
        if record.fields.get("response"):
            return str(record.fields["response"])
        return self.logs["answer"].entries[record.id]["text"]

    def _finish_rewrite(self, text: str) -> tuple[str | None, str | None]:
        return speakable(text.strip().strip('"'), self.config.rewrite.max_words)

    def _finish_answer(self, text: str) -> tuple[str | None, str | None]:
        return speakable(text, self.config.answer.max_words, self.config.answer.max_sentences)

    # ---- steps ------------------------------------------------------------------------------------
    def _llm_step(
        self,
        step: str,
        records: list[SourceRecord],
        system: str | None,
        template: str,
        finish: Callable[[str], tuple[str | None, str | None]],
    ) -> list[SourceRecord]:
        """Ask the LLM about every record not yet done; the records whose text passed `finish`."""
        log, began = self.logs[step], time.perf_counter()
        todo = [r for r in records if r.id not in log or log.entries[r.id].get("retry")]
        failures: Counter[str] = Counter()
        if todo:
            with tqdm(total=len(todo), desc=step, unit="record") as bar:
                for chunk in batched(todo, self.backend.batch_size):
                    asks = [self._conversation(system, template, self._source_text(step, r)) for r in chunk]
                    for record, reply in zip(chunk, self.backend.chat(asks), strict=True):
                        if isinstance(reply, LLMError):
                            failures[reply.reason] += 1
                            log.add({"id": record.id, "skip": f"LLM failed: {reply.reason}", "retry": True})
                            continue
                        text, reason = finish(reply)
                        log.add({"id": record.id, "raw": reply} | ({"text": text} if text else {"skip": reason}))
                    bar.update(len(chunk))
        self._check_step(step, len(todo), failures)
        self.timings[step] = round(time.perf_counter() - began, 2)
        return [r for r in records if "text" in log.entries[r.id]]

    def _source_text(self, step: str, record: SourceRecord) -> str:
        return record.instruction if step == "rewrite" else self.spoken_instruction(record)

    @staticmethod
    def _conversation(system: str | None, template: str, instruction: str) -> list[dict[str, str]]:
        user = {"role": "user", "content": template.replace("{instruction}", instruction)}
        return [{"role": "system", "content": system}, user] if system else [user]

    def _speech_step(
        self,
        step: str,
        records: list[SourceRecord],
        tts_config: TTSConfig,
        folder: str,
        text_of: Callable[[SourceRecord], str],
    ) -> list[SourceRecord]:
        """Speak every record not yet spoken (instructions that came with audio are measured, not spoken)."""
        log, began = self.logs[step], time.perf_counter()
        todo = [r for r in records if r.id not in log or log.entries[r.id].get("retry")]
        failures: Counter[str] = Counter()
        if todo:
            tts = make_tts(tts_config)
            (self.out / folder).mkdir(parents=True, exist_ok=True)

            def speak(record: SourceRecord) -> dict[str, Any]:
                given = record.fields.get("audio") if step == "speech" else None
                if given:
                    path = Path(given) if Path(given).is_absolute() else Path(self.config.source.path).parent / given
                    return {"id": record.id, "audio": str(path.resolve()), "duration": soundfile.info(path).duration}
                voice, rate = pick_voice(tts_config, record.id)
                relative = f"{folder}/{file_name(record.id)}.wav"
                seconds = tts.synthesize(text_of(record), voice, rate, self.out / relative)
                return {"id": record.id, "audio": relative, "duration": round(seconds, 3), "voice": voice, "rate": rate}

            with (
                ThreadPoolExecutor(self.config.tts_workers) as pool,
                tqdm(total=len(todo), desc=step, unit="record") as bar,
            ):
                futures = {pool.submit(speak, r): r for r in todo}
                for future in as_completed(futures):
                    try:
                        log.add(future.result())
                    except (TTSError, RuntimeError, OSError) as err:
                        reason = getattr(err, "reason", None) or str(err)
                        failures[reason] += 1
                        log.add({"id": futures[future].id, "skip": f"speech failed: {reason}", "retry": True})
                    bar.update(1)
        self._check_step(step, len(todo), failures)
        self.timings[step] = round(time.perf_counter() - began, 2)
        return [r for r in records if "audio" in log.entries[r.id]]

    @staticmethod
    def _check_step(step: str, tried: int, failures: Counter[str]) -> None:
        if tried and sum(failures.values()) == tried:
            reason, count = failures.most_common(1)[0]
            raise StepFailed(f"step {step!r} failed for all {tried} records ({count} x {reason}); rerun to retry them")


def merge(config: BuildConfig) -> dict[str, Any]:
    """Join every shard's logs into `train.jsonl`, `heldout.jsonl`, `hf/` and `report.{json,md}`."""
    out = Path(config.out)
    shards = sorted((out / WORK).glob("shard-*-of-*"))
    if not shards:
        raise FileNotFoundError(f"{out / WORK}: no shard has been built yet")
    counts = {int(s.name.rsplit("-", 1)[1]) for s in shards}
    if len(counts) > 1:
        raise ValueError(f"{out / WORK}: shards of different counts {sorted(counts)}; remove the stale ones")
    total = counts.pop()
    missing = [i for i in range(total) if not (work_dir(out, i, total) / DONE_FILE).is_file()]
    if missing:
        raise FileNotFoundError(f"{out / WORK}: shards {missing[:10]} of {total} are not finished; build them first")
    records, dropped = load_source(config.source, config.filters)
    entries = {step: {} for step in STEPS}
    timings: Counter[str] = Counter()
    for i in range(total):
        for step in STEPS:
            entries[step] |= StepLog(work_dir(out, i, total) / f"{step}.jsonl").entries
        timings.update(json.loads((work_dir(out, i, total) / DONE_FILE).read_text())["timings_s"])
    splits: dict[str, list[dict]] = {"train": [], "heldout": []}
    skipped = [{"id": d.id, "step": "source", "reason": d.reason} for d in dropped]
    for record in records:
        built, skip = _assemble(record, entries, config)
        if skip:
            skipped.append({"id": record.id, "step": skip[0], "reason": skip[1]})
        else:
            splits["heldout" if is_heldout(record, config) else "train"].append(built)
    for name, rows in splits.items():
        write_atomic(out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        _save_datasets(rows, out, out / "hf" / name)
    report = _report(config, records, dropped, splits, skipped, entries, dict(timings), total)
    write_atomic(out / "report.json", json.dumps(report, indent=2))
    write_atomic(out / "report.md", report_markdown(report))
    return report


def _assemble(
    record: SourceRecord, entries: dict[str, dict], config: BuildConfig
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The output record, or the step that dropped it and why."""
    steps = [s for s in STEPS if s != "rewrite" or config.rewrite.enabled]
    steps = [s for s in steps if s != "answer" or not record.fields.get("response")]
    steps = [s for s in steps if s != "answer_speech" or config.speak_answers]
    for step in steps:
        entry = entries[step].get(record.id)
        if entry is None:
            return {}, (step, "not built (rerun the build)")
        if "skip" in entry:
            return {}, (step, entry["skip"])
    speech = entries["speech"][record.id]
    rewrite = entries["rewrite"].get(record.id) if config.rewrite.enabled else None
    response = record.fields.get("response") or entries["answer"][record.id]["text"]
    built = {
        "id": record.id,
        "audio": speech["audio"],
        "instruction": rewrite["text"] if rewrite else record.instruction,
    }
    if rewrite:
        built["written_instruction"] = record.instruction
    built |= {"response": response, "duration": speech["duration"]}
    built |= {k: speech[k] for k in ("voice", "rate") if k in speech}
    if config.speak_answers:
        spoken = entries["answer_speech"][record.id]
        built |= {"response_audio": spoken["audio"], "response_duration": spoken["duration"]}
    built |= {k: v for k, v in record.fields.items() if k not in ("audio", "response", "heldout")}
    return built, None


def _save_datasets(rows: list[dict], out: Path, directory: Path) -> None:
    """The same records as a `datasets` directory, audio paths made absolute."""
    import datasets

    absolute = [
        r
        | {
            k: str((out / r[k]).resolve())
            for k in ("audio", "response_audio")
            if k in r and not Path(r[k]).is_absolute()
        }
        for r in rows
    ]
    if absolute:
        datasets.Dataset.from_list(absolute).save_to_disk(str(directory))


def _report(
    config: BuildConfig,
    records: list[SourceRecord],
    dropped: list[Dropped],
    splits: dict[str, list[dict]],
    skipped: list[dict],
    entries: dict[str, dict],
    timings: dict[str, float],
    shards: int,
) -> dict[str, Any]:
    by_step: dict[str, Counter[str]] = {}
    for s in skipped:
        by_step.setdefault(s["step"], Counter())[s["reason"]] += 1
    steps = {
        step: {
            "done": sum("skip" not in e for e in entries[step].values()),
            "skipped": dict(by_step.get(step, {})),
            "seconds": timings.get(step, 0.0),
        }
        for step in STEPS
        if entries[step]
    }
    hours = {name: round(sum(r["duration"] for r in rows) / 3600, 3) for name, rows in splits.items()}
    return {
        "source": config.source.path,
        "llm": {"backend": config.llm.backend, "model": config.llm.model, "base_url": config.llm.base_url},
        "shards": shards,
        "source_rows": len(records) + len(dropped),
        "records": {name: len(rows) for name, rows in splits.items()},
        "hours": hours,
        "steps": {"source": {"done": len(records), "skipped": dict(by_step.get("source", {}))}} | steps,
        "skipped": skipped,
    }


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Build report: {report['source']}",
        "",
        f"{report['source_rows']} source rows -> {report['records']['train']} train and "
        f"{report['records']['heldout']} held-out records ({report['hours']['train']} h and "
        f"{report['hours']['heldout']} h of instruction speech), {report['shards']} shard(s).",
        "",
        "| step | done | skipped | seconds | why skipped |",
        "|---|---|---|---|---|",
    ]
    for step, s in report["steps"].items():
        why = "; ".join(f"{reason} ({n})" for reason, n in sorted(s["skipped"].items(), key=lambda x: -x[1]))
        lines.append(f"| {step} | {s['done']} | {sum(s['skipped'].values())} | {s.get('seconds', '')} | {why} |")
    lines += ["", f"Every skipped record, with its step and reason: report.json ({len(report['skipped'])})."]
    return "\n".join(lines) + "\n"
