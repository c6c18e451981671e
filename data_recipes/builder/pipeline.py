"""The build: each shard runs its records through the steps, then one merge writes omni's records.

    source -> filters -> [rewrite] -> answer -> [respeak] -> [follow-up -> answer, per later turn]
        -> instruction speech -> [answer speech] -> merge -> [units]

An answer is normalised for speech (speakable.py); one that still cannot be spoken (a list, code, a table, a
symbol, too long) is rewritten for speech by the LLM (`respeak`) and checked again: only what fails twice is
skipped, with its cause.

A record belongs to shard `sha1(id) mod num_shards`, so shards are disjoint and need no coordination: a Slurm
array, Ray or plain processes each run one (`--num-shards N --shard-index i`), then `merge` joins them.
Every step appends one line per record to its log in `work/shard-i-of-n/` (store.py), so a rerun does only
what is missing; a request or synthesis that failed is logged as a skip to retry, and is tried again by the
next run. A step fails the build only when every record it tried failed. Answers from a fixed (greedy) LLM
and voices chosen by a hash of the id make a sharded build give the same records as a single process.

Dialogues: a record's follow-up questions (given in the source, or written by the LLM from the dialogue so
far) become later turns, `<id>-t1`, `<id>-t2`, in the first turn's shard and split; each is answered with
the earlier turns in the LLM's context, spoken like any question, and merged with them as its `history`.
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
from data_recipes.builder.store import StepLog
from data_recipes.builder.tts import TTSConfig, TTSError, engine_name, make_tts, pick_engine, pick_voice
from omni.atomic import write_atomic

WORK = "work"
DONE_FILE = "done.json"
INSTRUCTION_WAVS = "wavs"
ANSWER_WAVS = "response_wavs"
STEPS = ("rewrite", "answer", "respeak", "follow_up", "speech", "answer_speech")


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
    """A dialogue's turns share their first turn's split."""
    if config.source.heldout_field:
        return bool(record.fields.get("heldout"))
    return _share(f"heldout:{dialogue_of(record)}") < config.split.heldout


def _share(key: str) -> float:
    """A stable number in [0, 1) for a key."""
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 10_000 / 10_000


def dialogue_of(record: SourceRecord) -> str:
    return record.fields.get("dialogue", record.id)


def turn_of(record: SourceRecord) -> int:
    return int(record.fields.get("turn", 0))


def next_turn(parent: SourceRecord, question: str) -> SourceRecord:
    """The dialogue's next question: its parent's fields but a given answer or audio (the first turn's own)."""
    turn, dialogue = turn_of(parent) + 1, dialogue_of(parent)
    fields = {k: v for k, v in parent.fields.items() if k not in ("response", "audio")}
    fields |= {"dialogue": dialogue, "turn": turn, "parent": parent.id}
    return SourceRecord(f"{dialogue}-t{turn}", question, parent.index, fields)


def given_follow_up(record: SourceRecord, turn: int) -> str | None:
    """The source's follow-up question for `turn` of the record's dialogue, if it has one."""
    follow_ups = record.fields.get("follow_ups")
    if isinstance(follow_ups, list) and len(follow_ups) >= turn:
        question = follow_ups[turn - 1]
        return question.strip() if isinstance(question, str) and question.strip() else None
    return None


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
        self.by_id = {r.id: r for r in self.records}  # with the later turns of dialogues, once made
        self.logs = {step: StepLog(self.work / f"{step}.jsonl") for step in STEPS}
        self._backend: ChatBackend | None = None

    @property
    def backend(self) -> ChatBackend:
        if self._backend is None:  # loaded only when a step has work for it
            self._backend = make_backend(self.config.llm)
        return self._backend

    def run(self) -> dict[str, Any]:
        c = self.config
        alive = self.records
        if c.rewrite.enabled:
            rewrite = lambda r: self._messages(c.rewrite.system, c.rewrite.template, r.instruction)  # noqa: E731
            alive = self._llm_step("rewrite", alive, rewrite, self._finish_rewrite)
        alive = self._answered(alive)
        turn, asked = 1, alive
        while later := self._follow_ups(asked, turn):
            asked = self._answered(later)
            alive += asked
            turn += 1
        alive = sorted(alive, key=lambda r: (r.index, turn_of(r)))
        if c.speak_instructions:
            engines = [c.instruction_tts, *c.instruction_engines]
            alive = self._speech_step("speech", alive, engines, INSTRUCTION_WAVS, self.spoken_instruction)
        if c.speak_answers:
            alive = self._speech_step("answer_speech", alive, [c.answer_tts], ANSWER_WAVS, self.answer_text)
        summary = {"records": len(self.records), "built": len(alive), "seconds": self.seconds()}
        write_atomic(self.work / DONE_FILE, json.dumps(summary, indent=2))
        return summary

    def seconds(self) -> dict[str, float]:
        """Each step's time over every run of this shard (a killed run's finished records count too)."""
        return {step: step_seconds(log.entries) for step, log in self.logs.items() if log.entries}

    def _answered(self, records: list[SourceRecord]) -> list[SourceRecord]:
        """The records with an answer: given in the source, or written now (earlier turns in context)."""
        given = [r for r in records if r.fields.get("response")]
        asked = [r for r in records if not r.fields.get("response")]
        answered = self._llm_step("answer", asked, self._answer_messages, self._finish_answer)
        if self.config.answer.respeak:
            unspoken = [r for r in asked if respeakable(self.logs["answer"].entries[r.id])]
            answered += self._llm_step("respeak", unspoken, self._respeak_messages, self._finish_answer)
        return sorted(given + answered, key=lambda r: r.index)

    def _follow_ups(self, parents: list[SourceRecord], turn: int) -> list[SourceRecord]:
        """The next turn of every dialogue that goes on: the source's follow-up, else one the LLM writes."""
        d = self.config.dialogue
        given = {p.id: q for p in parents if (q := given_follow_up(p, turn))}
        to_write = [
            p
            for p in parents
            if p.id not in given and turn < d.turns and _share(f"dialogue:{dialogue_of(p)}") < d.share
        ]
        written = self._llm_step("follow_up", to_write, self._follow_up_messages, self._finish_follow_up)
        questions = given | {p.id: self.logs["follow_up"].entries[p.id]["text"] for p in written}
        later = [next_turn(p, questions[p.id]) for p in parents if p.id in questions]
        self.by_id |= {r.id: r for r in later}
        return later

    # ---- texts each step works on --------------------------------------------------------------
    def spoken_instruction(self, record: SourceRecord) -> str:
        rewrite = self.logs["rewrite"].entries.get(record.id)
        return rewrite["text"] if self.config.rewrite.enabled and rewrite else record.instruction

    def answer_text(self, record: SourceRecord) -> str:
        if record.fields.get("response"):
            return str(record.fields["response"])
        return written_answer(record.id, {step: log.entries for step, log in self.logs.items()})["text"]

    def _finish_rewrite(self, text: str) -> tuple[str | None, str | None]:
        return speakable(text.strip().strip('"'), self.config.rewrite.max_words)

    def _finish_answer(self, text: str) -> tuple[str | None, str | None]:
        return speakable(text, self.config.answer.max_words, self.config.answer.max_sentences)

    def _finish_follow_up(self, text: str) -> tuple[str | None, str | None]:
        question = text.strip().strip('"').removeprefix("User:").strip()
        return speakable(question, self.config.dialogue.max_words, 1)

    # ---- what the LLM is asked ----------------------------------------------------------------------
    def earlier_turns(self, record: SourceRecord) -> list[SourceRecord]:
        """The earlier questions of a record's dialogue, oldest first."""
        chain = []
        while "parent" in record.fields:
            record = self.by_id[record.fields["parent"]]
            chain.append(record)
        return chain[::-1]

    @staticmethod
    def _messages(system: str | None, template: str, instruction: str) -> list[dict[str, str]]:
        user = {"role": "user", "content": template.replace("{instruction}", instruction)}
        return [{"role": "system", "content": system}, user] if system else [user]

    def _answer_messages(self, record: SourceRecord) -> list[dict[str, str]]:
        """The answering prompt: the dialogue's earlier questions and answers, then this question."""
        a = self.config.answer
        messages = [{"role": "system", "content": a.system}] if a.system else []
        for earlier in self.earlier_turns(record):
            messages += self._messages(None, a.template, self.spoken_instruction(earlier))
            messages.append({"role": "assistant", "content": self.answer_text(earlier)})
        return messages + self._messages(None, a.template, self.spoken_instruction(record))

    def _respeak_messages(self, record: SourceRecord) -> list[dict[str, str]]:
        """The rewriting-for-speech prompt: the question and the answer as it was written."""
        written = self.logs["answer"].entries[record.id]["raw"]
        user = f"Question: {self.spoken_instruction(record)}\n\nWritten answer:\n{written}"
        return [{"role": "system", "content": self.config.answer.respeak_system}, {"role": "user", "content": user}]

    def _follow_up_messages(self, record: SourceRecord) -> list[dict[str, str]]:
        """The follow-up writer's prompt: the dialogue up to and including this record's answer."""
        d = self.config.dialogue
        lines = []
        for turn in [*self.earlier_turns(record), record]:
            lines += [f"User: {self.spoken_instruction(turn)}", f"Assistant: {self.answer_text(turn)}"]
        user = {"role": "user", "content": d.template.replace("{conversation}", "\n".join(lines))}
        return [{"role": "system", "content": d.system}, user] if d.system else [user]

    # ---- steps ------------------------------------------------------------------------------------
    def _llm_step(
        self,
        step: str,
        records: list[SourceRecord],
        messages: Callable[[SourceRecord], list[dict[str, str]]],
        finish: Callable[[str], tuple[str | None, str | None]],
    ) -> list[SourceRecord]:
        """Ask the LLM about every record not yet done; the records whose text passed `finish`."""
        log = self.logs[step]
        todo = [r for r in records if r.id not in log or log.entries[r.id].get("retry")]
        failures: Counter[str] = Counter()
        if todo:
            with tqdm(total=len(todo), desc=step, unit="record") as bar:
                for chunk in batched(todo, self.backend.batch_size):
                    asks, began = [messages(r) for r in chunk], time.perf_counter()
                    replies = self.backend.chat(asks)
                    share = {"s": round((time.perf_counter() - began) / len(chunk), 4)}  # the chunk's time, shared
                    for record, reply in zip(chunk, replies, strict=True):
                        if isinstance(reply, LLMError):
                            failures[reply.reason] += 1
                            log.add({"id": record.id, "skip": f"LLM failed: {reply.reason}", "retry": True} | share)
                            continue
                        text, reason = finish(reply)
                        outcome = {"text": text} if text else {"skip": reason}
                        log.add({"id": record.id, "raw": reply} | outcome | share)
                    bar.update(len(chunk))
        self._check_step(step, len(todo), failures)
        return [r for r in records if "text" in log.entries[r.id]]

    def _speech_step(
        self,
        step: str,
        records: list[SourceRecord],
        engines: list[TTSConfig],
        folder: str,
        text_of: Callable[[SourceRecord], str],
    ) -> list[SourceRecord]:
        """Speak every record not yet spoken, each by its engine, voice, rate and pitch (instructions that came
        with audio are measured, not spoken)."""
        log = self.logs[step]
        todo = [r for r in records if r.id not in log or log.entries[r.id].get("retry")]
        failures: Counter[str] = Counter()
        if todo:
            chosen = {r.id: pick_engine(len(engines), r.id) for r in todo}
            backends = {i: make_tts(engines[i]) for i in sorted(set(chosen.values()))}  # a missing one fails here
            last = time.perf_counter()
            (self.out / folder).mkdir(parents=True, exist_ok=True)

            def speak(record: SourceRecord) -> dict[str, Any]:
                given = record.fields.get("audio") if step == "speech" else None
                if given:
                    path = Path(given) if Path(given).is_absolute() else Path(self.config.source.path).parent / given
                    return {"id": record.id, "audio": str(path.resolve()), "duration": soundfile.info(path).duration}
                engine = engines[chosen[record.id]]
                voice, rate, pitch = pick_voice(engine, record.id)
                relative = f"{folder}/{file_name(record.id)}.wav"
                seconds = backends[chosen[record.id]].synthesize(
                    text_of(record), voice, rate, self.out / relative, pitch
                )
                spoken = {"voice": voice, "rate": rate} | ({"pitch": pitch} if pitch != 50 else {})
                if len(engines) > 1:
                    spoken["engine"] = engine_name(engine)
                return {"id": record.id, "audio": relative, "duration": round(seconds, 3)} | spoken

            with (
                ThreadPoolExecutor(self.config.tts_workers) as pool,
                tqdm(total=len(todo), desc=step, unit="record") as bar,
            ):
                futures = {pool.submit(speak, r): r for r in todo}
                for future in as_completed(futures):
                    now = time.perf_counter()
                    share, last = {"s": round(now - last, 4)}, now  # wall time since the last one finished
                    try:
                        log.add(future.result() | share)
                    except (TTSError, RuntimeError, OSError) as err:
                        reason = getattr(err, "reason", None) or str(err)
                        failures[reason] += 1
                        log.add({"id": futures[future].id, "skip": f"speech failed: {reason}", "retry": True} | share)
                    bar.update(1)
        self._check_step(step, len(todo), failures)
        return [r for r in records if "audio" in log.entries[r.id]]

    @staticmethod
    def _check_step(step: str, tried: int, failures: Counter[str]) -> None:
        if tried and sum(failures.values()) == tried:
            reason, count = failures.most_common(1)[0]
            raise StepFailed(f"step {step!r} failed for all {tried} records ({count} x {reason}); rerun to retry them")


def step_seconds(entries: dict[str, dict]) -> float:
    """A step's time: the wall time each logged record carries, summed."""
    return round(sum(e.get("s", 0.0) for e in entries.values()), 2)


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
    for i in range(total):
        for step in STEPS:
            entries[step] |= StepLog(work_dir(out, i, total) / f"{step}.jsonl").entries
    splits: dict[str, list[dict]] = {"train": [], "heldout": []}
    skipped = [{"id": d.id, "step": "source", "reason": d.reason} for d in dropped]
    by_id = {r.id: r for r in records}
    for record in with_later_turns(records, entries):
        by_id[record.id] = record
        built, skip = _assemble(record, entries, config, by_id)
        if skip:
            skipped.append({"id": record.id, "step": skip[0], "reason": skip[1]})
        else:
            splits["heldout" if is_heldout(record, config) else "train"].append(built)
    for name, rows in splits.items():
        write_atomic(out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        _save_datasets(rows, out, out / "hf" / name)
    report = _report(config, records, dropped, splits, skipped, entries, total)
    write_report(out, report)
    return report


def respeakable(answer: dict[str, Any]) -> bool:
    """Whether an answer log entry was written but could not be spoken (not an LLM failure, not empty)."""
    return "raw" in answer and "skip" in answer and answer["skip"] != "empty"


def written_answer(record_id: str, entries: dict[str, dict]) -> dict[str, Any]:
    """The log entry that holds a record's answer: the answer step's, or its rewrite for speech when the
    answer could not be spoken and a rewrite was asked for (a skip then names the rewrite's cause)."""
    answer = entries["answer"].get(record_id, {})
    respoken = entries["respeak"].get(record_id)
    if respoken is None or not respeakable(answer):
        return answer
    if "skip" in respoken and "retry" not in respoken:
        return respoken | {"skip": f"{respoken['skip']}, after a rewrite for speech"}
    return respoken


def with_later_turns(records: list[SourceRecord], entries: dict[str, dict]) -> list[SourceRecord]:
    """The source's records and the later turns of their dialogues that were made (after each answered
    question, its follow-up: the source's, else the LLM's from the follow-up log), in output order."""
    every, asked = list(records), list(records)
    turn = 1
    while asked:
        later = []
        for parent in asked:
            answered = parent.fields.get("response") or "text" in written_answer(parent.id, entries)
            question = given_follow_up(parent, turn) or entries["follow_up"].get(parent.id, {}).get("text")
            if answered and question:
                later.append(next_turn(parent, question))
        every += later
        asked, turn = later, turn + 1
    return sorted(every, key=lambda r: (r.index, turn_of(r)))


def _assemble(
    record: SourceRecord, entries: dict[str, dict], config: BuildConfig, by_id: dict[str, SourceRecord]
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The output record, or the step that dropped it and why; a later turn carries the earlier ones as
    `history` and is dropped with them."""
    history: list[dict[str, Any]] = []
    if parent_id := record.fields.get("parent"):
        earlier, skip = _assemble(by_id[parent_id], entries, config, by_id)
        if skip:
            return {}, ("dialogue", "an earlier turn of its dialogue was dropped")
        history = earlier.pop("history", [])
        history += [
            {"role": "user", "text": earlier["instruction"]}
            | ({"audio": earlier["audio"]} if "audio" in earlier else {}),
            {"role": "assistant", "text": earlier["response"]},
        ]
    steps = [s for s in STEPS if s not in ("follow_up", "respeak")]  # respeak: inside the answer's entry
    steps = [s for s in steps if s != "rewrite" or (config.rewrite.enabled and not history)]
    steps = [s for s in steps if s != "answer" or not record.fields.get("response")]
    steps = [s for s in steps if s != "answer_speech" or config.speak_answers]
    steps = [s for s in steps if s != "speech" or config.speak_instructions]
    for step in steps:
        entry = written_answer(record.id, entries) if step == "answer" else entries[step].get(record.id)
        if not entry:
            return {}, (step, "not built (rerun the build)")
        if "skip" in entry:
            return {}, (step, entry["skip"])
    speech = entries["speech"][record.id] if config.speak_instructions else {}
    rewrite = entries["rewrite"].get(record.id) if config.rewrite.enabled and not history else None
    response = record.fields.get("response") or written_answer(record.id, entries)["text"]
    built = {"id": record.id} | ({"audio": speech["audio"]} if speech else {})
    built["instruction"] = rewrite["text"] if rewrite else record.instruction
    if rewrite:
        built["written_instruction"] = record.instruction
    built |= {"response": response} | ({"duration": speech["duration"]} if speech else {})
    built |= {k: speech[k] for k in ("engine", "voice", "rate", "pitch") if k in speech}
    if config.speak_answers:
        spoken = entries["answer_speech"][record.id]
        built |= {"response_audio": spoken["audio"], "response_duration": spoken["duration"]}
    internal = ("audio", "response", "heldout", "follow_ups", "parent")
    built |= {k: v for k, v in record.fields.items() if k not in internal}
    if history:
        built["history"] = history
    return built, None


def _save_datasets(rows: list[dict], out: Path, directory: Path) -> None:
    """The same records as a `datasets` directory, audio paths made absolute."""
    import datasets

    def resolved(path: str) -> str:
        return path if Path(path).is_absolute() else str((out / path).resolve())

    absolute = []
    for r in rows:
        row = r | {k: resolved(r[k]) for k in ("audio", "response_audio") if k in r}
        if "history" in r:
            row["history"] = [t | ({"audio": resolved(t["audio"])} if "audio" in t else {}) for t in r["history"]]
        absolute.append(row)
    keys = {k: None for row in absolute for k in row}  # every column in every row (later turns add some)
    if absolute:
        datasets.Dataset.from_list([keys | row for row in absolute]).save_to_disk(str(directory))


def _report(
    config: BuildConfig,
    records: list[SourceRecord],
    dropped: list[Dropped],
    splits: dict[str, list[dict]],
    skipped: list[dict],
    entries: dict[str, dict],
    shards: int,
) -> dict[str, Any]:
    by_step: dict[str, Counter[str]] = {}
    for s in skipped:
        by_step.setdefault(s["step"], Counter())[s["reason"]] += 1
    steps = {
        step: {
            "done": sum("skip" not in e for e in entries[step].values()),
            "skipped": dict(by_step.get(step, {})),
            "seconds": step_seconds(entries[step]),
        }
        for step in STEPS
        if entries[step]
    }
    hours = {name: round(sum(r.get("duration", 0) for r in rows) / 3600, 3) for name, rows in splits.items()}
    report = {
        "source": config.source.path,
        "llm": {"backend": config.llm.backend, "model": config.llm.model, "base_url": config.llm.base_url},
        "shards": shards,
        "source_rows": len(records) + len(dropped),
        "records": {name: len(rows) for name, rows in splits.items()},
        "later_turns": {name: sum("history" in r for r in rows) for name, rows in splits.items()},
        "hours": hours,
        "steps": {"source": {"done": len(records), "skipped": dict(by_step.get("source", {}))}} | steps,
        "instruction_speech": speech_variety(config, [r for rows in splits.values() for r in rows]),
        "skipped": skipped,
    }
    return with_rate(report)


def speech_variety(config: BuildConfig, built: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """How many built records each engine and voice, rate and pitch spoke (instructions the build spoke)."""
    spoken = [r for r in built if "voice" in r]
    first = engine_name(config.instruction_tts)
    counts = {
        "voices": Counter(f"{r.get('engine', first)} {r['voice']}" for r in spoken),
        "rates": Counter(f"{r['rate']:g}" for r in spoken),
        "pitches": Counter(str(r.get("pitch", 50)) for r in spoken),
    }
    return {name: dict(counter.most_common()) for name, counter in counts.items()}


def with_rate(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its total step time (the units step's included) and records built per minute of it."""
    seconds = sum(s.get("seconds", 0.0) for s in report["steps"].values())
    if "units" in report:
        seconds += sum(report["units"]["timings"].values())
    built = sum(report["records"].values())
    rate = round(60 * built / seconds, 1) if seconds else None
    return report | {"seconds": round(seconds, 1), "records_per_minute": rate}


def write_report(out: Path, report: dict[str, Any]) -> None:
    write_atomic(out / "report.json", json.dumps(report, indent=2))
    write_atomic(out / "report.md", report_markdown(report))


def report_markdown(report: dict[str, Any]) -> str:
    built = sum(report["records"].values())
    lines = [
        f"# Build report: {report['source']}",
        "",
        f"{report['source_rows']} source rows -> {report['records']['train']} train and "
        f"{report['records']['heldout']} held-out records ({built / max(report['source_rows'], 1):.0%}; "
        f"{report['hours']['train']} h and {report['hours']['heldout']} h of instruction speech), "
        f"{report['shards']} shard(s), {report['records_per_minute']} records per minute of step time.",
        "",
        "| step | done | skipped | seconds | why skipped |",
        "|---|---|---|---|---|",
    ]
    for step, s in report["steps"].items():
        why = "; ".join(f"{reason} ({n})" for reason, n in sorted(s["skipped"].items(), key=lambda x: -x[1]))
        seconds = f"{s['seconds']:.1f}" if "seconds" in s else ""
        lines.append(f"| {step} | {s['done']} | {sum(s['skipped'].values())} | {seconds} | {why} |")
    if units := report.get("units"):
        clips = sum(split["records"] for split in units["splits"].values())
        lines.append(f"| units | {clips} | 0 | {sum(units['timings'].values()):.1f} | |")
    if voices := report.get("instruction_speech", {}).get("voices"):
        counts = {name: len(report["instruction_speech"][name]) for name in ("voices", "rates", "pitches")}
        listed = ", ".join(f"{name} ({n})" for name, n in voices.items())
        lines += ["", f"Instruction speech: {counts['voices']} voices, {counts['rates']} rates, "
                  f"{counts['pitches']} pitches: {listed}."]  # fmt: skip
    lines += [
        "",
        f"Step seconds are summed over shards. Every skipped record, with its step and reason: "
        f"report.json ({len(report['skipped'])}).",
    ]
    return "\n".join(lines) + "\n"
