"""Public spoken-instruction sets imported into omni's dataset contract (omni/data.py).

    python -m data_recipes.builder.importers instructs2s --json instruct_en_200k_data_cosy2.json \\
        --audio-root InstructS2S-200K --out data/instructs2s [--limit N]
    python -m data_recipes.builder.importers voiceassistant --parquet data/train-*.parquet --out data/voiceassistant
    python -m data_recipes.builder.importers sphinx --out data/voices/human     # Debian's real recordings
    python -m data_recipes.builder.importers voicebench --parquet sd-qa/usa-*.parquet --out data/bench/sdqa_usa
    python -m data_recipes.builder.importers openaudiobench --subset eval_datas/llama_questions --out data/bench/llamaq
    python -m data_recipes.builder.importers alpacaeval --json example/outputs.json --out data/bench/s2s_eval

Each writes `out/records.jsonl` and `out/import_report.json`: counts, and every record skipped with its reason
(a bad record is skipped, never fatal; a file that is not the layout below is an error).

Layouts relied on:

InstructS2S-200K (ICTNLP, CC BY-NC 4.0): `instruct_en_200k_data_cosy2.json`, one JSON array (about 1 GB:
read one item at a time) of
    {"id": ..., "conversation": [{"from": "human" | "gpt", "text": str, "speech": str, "unit": ...}, ...]}
`speech` names a wav relative to the audio root (an absolute path is used as it is). `unit` holds CosyVoice2
tokens (vocabulary 6561, 25 Hz), not the K=1000 units omni's speech decoder learns, so they are dropped;
the gpt turn's wav becomes `response_audio`, from which the builder's units step re-extracts units.
Whole dialogues are kept: one record per answered human turn (a human turn and the first gpt turn after
it), its earlier exchanges in `history` (questions with their text and wav, answers with their text).
Records: id (the dialogue's id; `<id>-t<k>` for its k-th later exchange), audio (the question wav,
absolute), instruction, response, response_audio, duration, history (later exchanges only). A turn whose
question is unusable ends its dialogue there: later records would lean on a turn they cannot have.

VoiceAssistant-400K (gpt-omni, Apache-2.0): parquet shards `data/train-*-of-00325.parquet` with columns
    split_name (str), index (int), round (int), question (str), question_audio ({"bytes", "path"}),
    answer (str), answer_snac (str)
There is no answer audio: the builder's TTS speaks the answers when stage 2 needs them; answer_snac (SNAC
codec tokens, not units) is dropped. `round`: a row is kept only when its round is the lowest among the rows
sharing its split_name and index, the first exchange (a later one may lean on turns we do not have); where
every row has its own split_name and index, every row is kept. The report counts rows per round. Question
audio is decoded and written as `out/wavs/<id>.wav` (16 kHz mono, atomically; a rerun reuses wavs there).
Records: id (<split_name>-<index>), audio (wavs/<id>.wav, relative), instruction, response, duration.

Benchmarks (evaluation sets; records as above, `response` the benchmark's reference answer where it has one, else
null; `omni eval --bench out/records.jsonl` answers them):

VoiceBench (hlt-lab/voicebench, Apache-2.0): one parquet file per subset and split (`alpacaeval`, `commoneval`,
`sd-qa` per accent, `openbookqa`, `mmsu`, `bbh`, `ifeval`, `advbench`) with columns `audio` ({"bytes", "path"}),
`prompt` (the question's text) and, in some subsets, `reference`. Audio decoded into `out/wavs/<id>.wav`; ids
`<file stem>-<row>`.

OpenAudioBench (baichuan-inc, Apache-2.0): `eval_datas/<subset>/<subset>.csv` and `eval_datas/<subset>/audios/
<audio_filename>`; the question and answer columns differ by subset (alpaca_eval: instruction / output;
llama_questions: Questions / Answer; trivia_qa: question / answer_normalized_value; web_questions: question /
answers; reasoning_qa: Prompt / 参考答案): the first present of QUESTION_COLUMNS / ANSWER_COLUMNS is read. Audio (mp3
or wav) decoded into `out/wavs/<id>.wav`; ids `<subset>-<row>`.

AlpacaEval (tatsu-lab/alpaca_eval, Apache-2.0; the prompts ship in its PyPI sdist as `example/outputs.json`, a JSON
array of {"instruction", "output", "generator", "dataset"}): InstructS2S-Eval's way, the `helpful_base` and
`vicuna` prompts (209; LLaMA-Omni kept 199 after dropping math and code), those that can be spoken
(data_recipes/builder/speakable.py; the rest skipped with their cause) spoken by the builder's TTS (espeak-ng
`en-us` unless told). `response` null: AlpacaEval's outputs are a baseline model's, not references.

pocketsphinx-testdata (Debian, BSD-2; the LibriVox audio public domain): `/usr/share/pocketsphinx/test/data/`
`cards/` (5 wavs, `cards.transcription`) and `librivox/` (5 wavs, `transcription`), transcripts as
`<s> words </s> (file id)`: people speaking, not synthesizers. Records: id (sphinx-<file id>), audio (absolute),
instruction (the transcript), response null (no answer was written: evaluations answer the transcript as text),
duration.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import soundfile
from tqdm.auto import tqdm

from data_recipes.builder.speakable import speakable
from data_recipes.builder.tts import TTSConfig, TTSError, engine_name, make_tts, pick_voice, write_wav
from omni.atomic import atomic_path, write_atomic
from omni.audio import AudioError
from omni.cli import command_parser, run_command

COSYVOICE_NOTE = (
    "InstructS2S's `unit` fields (CosyVoice2 tokens, vocabulary 6561) were dropped, never used as K=1000 units: "
    "the builder's units step re-extracts units from response_audio"
)
SNAC_NOTE = (
    "VoiceAssistant has no answer audio and its answer_snac (SNAC codec tokens) was dropped: "
    "the builder's TTS speaks the answers and its units step extracts their units when stage 2 needs them"
)
FIRST_TURN_NOTE = "first exchange of each dialogue only: rows of one dialogue are spread over the shards"
DIALOGUE_NOTE = "whole dialogues: one record per answered human turn, its earlier exchanges in `history`"
ROUND_KEY = ("split_name", "index", "round")
VOICEASSISTANT_COLUMNS = ("split_name", "index", "round", "question", "question_audio", "answer")
JSON_CHUNK = 1 << 20  # characters read at a time from a JSON array


class _Skip(Exception):
    """A record left out: `reason` is short, for counting; `detail` says which file or what went wrong."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def import_instructs2s(json_path: Path, audio_root: Path, out: Path, limit: int | None = None) -> dict:
    """InstructS2S-200K's dialogues into `out/records.jsonl` (at most `limit` records); returns the report."""
    json_path, audio_root, out = Path(json_path), Path(audio_root), Path(out)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no such file (expected instruct_en_200k_data_cosy2.json)")
    if not audio_root.is_dir():
        raise FileNotFoundError(f"{audio_root}: no such directory (the folder the `speech` wav names are under)")
    report = _new_report("InstructS2S-200K", [json_path], [DIALOGUE_NOTE, COSYVOICE_NOTE])
    report |= {"audio_root": str(audio_root), "exchanges_per_dialogue": Counter(), "without_response_audio": []}
    seen = set()
    with _records(out) as write:
        for number, item in enumerate(tqdm(_json_array(json_path), desc="dialogues", unit=" dialogues")):
            if limit is not None and report["records"] >= limit:
                break
            report["read"] += 1
            dialogue_id = str(item["id"]) if isinstance(item, dict) and item.get("id") is not None else str(number)
            try:
                if dialogue_id in seen:
                    raise _Skip("duplicate id")
                seen.add(dialogue_id)
                exchanges = 0
                for record in _instructs2s_records(item, dialogue_id, audio_root, report):
                    if limit is not None and report["records"] >= limit:
                        break
                    write(record, report)
                    exchanges += 1
                report["exchanges_per_dialogue"][exchanges] += 1
            except _Skip as skip:
                _skip(report["skipped"], dialogue_id, skip)
    report["exchanges_per_dialogue"] = dict(sorted(report["exchanges_per_dialogue"].items()))
    return _finish(report, out)


def _instructs2s_records(item: Any, dialogue_id: str, audio_root: Path, report: dict) -> Iterator[dict]:
    """One record per answered human turn, with the exchanges before it as `history`; _Skip if the first
    exchange is unusable, and the dialogue ends (reported) at the first later exchange that is."""
    if not isinstance(item, dict) or not isinstance(item.get("conversation"), list):
        raise _Skip("no conversation list")
    turns = [turn for turn in item["conversation"] if isinstance(turn, dict)]
    history: list[dict] = []
    position, exchange = 0, 0
    while True:
        human = next((i for i in range(position, len(turns)) if turns[i].get("from") == "human"), None)
        if human is None and exchange == 0:
            raise _Skip("no human turn")
        gpt = (
            None
            if human is None
            else next((i for i in range(human + 1, len(turns)) if turns[i].get("from") == "gpt"), None)
        )
        if gpt is None:
            if exchange == 0:
                raise _Skip("no gpt turn")
            return
        record_id = dialogue_id if exchange == 0 else f"{dialogue_id}-t{exchange}"
        try:
            record = _instructs2s_exchange(turns[human], turns[gpt], record_id, audio_root, report)
        except _Skip as skip:
            if exchange == 0:
                raise
            _skip(report["skipped"], record_id, _Skip(f"{skip.reason} (later turns of the dialogue dropped)"))
            return
        yield record | ({"history": list(history)} if history else {})
        history += [
            {"role": "user", "text": record.get("instruction") or "", "audio": record["audio"]},
            {"role": "assistant", "text": record["response"]},
        ]
        if not history[-2]["text"]:
            del history[-2]["text"]  # a question without words: its speech alone
        position, exchange = gpt + 1, exchange + 1


def _instructs2s_exchange(human: dict, gpt: dict, record_id: str, audio_root: Path, report: dict) -> dict:
    response = _text(gpt.get("text"))
    if response is None:
        raise _Skip("empty answer text")
    audio, duration = _wav(audio_root, human.get("speech"), "question")
    record = {"id": record_id, "audio": str(audio), "response": response, "duration": duration}
    if instruction := _text(human.get("text")):
        record["instruction"] = instruction
    try:
        record["response_audio"] = str(_wav(audio_root, gpt.get("speech"), "answer")[0])
    except _Skip as skip:  # still a stage-1 record; the builder's TTS can speak the answer
        _skip(report["without_response_audio"], record_id, skip)
    return record


def _wav(root: Path, name: Any, what: str) -> tuple[Path, float]:
    """A turn's wav (absolute) and its duration, checked readable from its header."""
    if not isinstance(name, str) or not name.strip():
        raise _Skip(f"no {what} speech")
    path = Path(os.path.abspath(root / name))
    if not path.is_file():
        raise _Skip(f"missing {what} wav", str(path))
    try:
        info = soundfile.info(str(path))
    except Exception as err:  # soundfile raises several types for unreadable input
        raise _Skip(f"unreadable {what} wav", f"{path}: {err}") from err
    if info.frames == 0:
        raise _Skip(f"empty {what} wav", str(path))
    return path, round(info.frames / info.samplerate, 3)


def import_voiceassistant(parquet_paths: list[Path], out: Path, limit: int | None = None) -> dict:
    """VoiceAssistant-400K's first-round rows into `out/records.jsonl` and `out/wavs/` (at most `limit`
    records); returns the report."""
    paths, out = [Path(path) for path in parquet_paths], Path(out)
    total = 0
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (expected a VoiceAssistant-400K parquet shard)")
        file = pq.ParquetFile(path)
        if missing := {"question_audio", "answer"} - set(file.schema_arrow.names):
            raise ValueError(f"{path}: no column {', '.join(sorted(missing))} (VoiceAssistant-400K's layout expected)")
        total += file.metadata.num_rows
    lowest = _lowest_rounds(paths)
    report = _new_report("VoiceAssistant-400K", paths, [FIRST_TURN_NOTE, SNAC_NOTE])
    rounds, seen = Counter(), set()
    with _records(out) as write:
        for fallback_id, row in tqdm(_parquet_rows(paths), total=total, desc="rows", unit=" rows"):
            if limit is not None and report["records"] >= limit:
                break
            report["read"] += 1
            rounds[str(row.get("round"))] += 1
            split, index = row.get("split_name"), row.get("index")
            record_id = _safe_name(f"{split}-{index}" if split is not None and index is not None else fallback_id)
            try:
                if row.get("round") is not None and row["round"] != lowest.get((split, index), row["round"]):
                    raise _Skip("later round", f"round {row['round']}")
                if record_id in seen:
                    raise _Skip("duplicate id")
                seen.add(record_id)
                write(_voiceassistant_record(row, record_id, out), report)
            except _Skip as skip:
                _skip(report["skipped"], record_id, skip)
    report["rounds"] = dict(sorted(rounds.items()))
    return _finish(report, out)


def _voiceassistant_record(row: dict, record_id: str, out: Path) -> dict:
    response = _text(row.get("answer"))
    if response is None:
        raise _Skip("empty answer text")
    audio = row.get("question_audio")
    data = audio.get("bytes") if isinstance(audio, dict) else None
    if not data:
        raise _Skip("no question audio")
    wav = out / "wavs" / f"{record_id}.wav"
    duration = _decoded_wav(io.BytesIO(data), wav, "bad audio bytes")
    record = {"id": record_id, "audio": f"wavs/{wav.name}", "response": response, "duration": round(duration, 3)}
    if instruction := _text(row.get("question")):
        record["instruction"] = instruction
    return record


def _decoded_wav(audio: Path | io.BytesIO, wav: Path, undecodable: str) -> float:
    """`audio` (a file or bytes in any format libsndfile reads) as a 16 kHz mono `wav`, atomically; its seconds. A
    wav already there is whole (an earlier run wrote it atomically) and is reused."""
    if wav.exists():
        return soundfile.info(str(wav)).duration
    try:
        samples, sample_rate = soundfile.read(audio, dtype="float32")
    except Exception as err:  # soundfile raises several types for undecodable input
        raise _Skip(undecodable, getattr(err, "error_string", None) or str(err)) from err
    try:
        return write_wav(samples, sample_rate, wav)
    except AudioError as err:
        raise _Skip("bad audio", str(err)) from err  # empty, silent or NaN


def _lowest_rounds(paths: list[Path]) -> dict[tuple, int]:
    """(split_name, index) -> the lowest round among its rows, from a pass over these three columns only."""
    lowest: dict[tuple, int] = {}
    for path in paths:
        file = pq.ParquetFile(path)
        if not set(ROUND_KEY) <= set(file.schema_arrow.names):
            continue
        table = file.read(columns=list(ROUND_KEY))
        for split, index, round_ in zip(*(table.column(name).to_pylist() for name in ROUND_KEY), strict=True):
            if None not in (split, index, round_):
                lowest[split, index] = min(lowest.get((split, index), round_), round_)
    return lowest


def _parquet_rows(paths: list[Path]) -> Iterator[tuple[str, dict]]:
    """Each row (the columns used) with a fallback id, <file stem>-<row number>, a batch in memory at a time."""
    for path in paths:
        file = pq.ParquetFile(path)
        columns = [name for name in VOICEASSISTANT_COLUMNS if name in file.schema_arrow.names]
        number = 0
        for batch in file.iter_batches(batch_size=64, columns=columns):
            for row in batch.to_pylist():
                yield f"{path.stem}-{number}", row
                number += 1


def _json_array(path: Path) -> Iterator[Any]:
    """The items of a JSON array file, one at a time: json.load of InstructS2S's 1 GB would hold it all."""
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8") as file:
        buffer, pos, offset, eof, started = "", 0, 0, False, False
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                pos += 1
            first = buffer[pos] if pos < len(buffer) else ""
            if first and not started:
                if first != "[":
                    raise ValueError(f"{path}: expected a JSON array of dialogues, found {first!r} first")
                started, pos = True, pos + 1
                continue
            if first == "]":
                return
            if first:
                try:
                    item, end = decoder.raw_decode(buffer, pos)
                    if eof or (end < len(buffer) and buffer[end] in " \t\r\n,]"):  # else a number may go on
                        yield item
                        pos = end
                        continue
                except json.JSONDecodeError as err:
                    if eof:
                        raise ValueError(f"{path}: invalid JSON at character {offset + err.pos}: {err.msg}") from err
            elif eof:
                raise ValueError(f"{path}: {'ends inside the array' if started else 'empty, expected a JSON array'}")
            chunk = file.read(JSON_CHUNK)
            offset, buffer, pos, eof = offset + pos, buffer[pos:] + chunk, 0, not chunk


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _safe_name(name: str) -> str:
    """An id usable as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"


def _new_report(source: str, inputs: list[Path], notes: list[str]) -> dict:
    return {"source": source, "inputs": [str(p) for p in inputs], "read": 0, "records": 0, "duration_s": 0.0} | {
        "skipped": [],
        "notes": notes,
    }


def _skip(entries: list[dict], record_id: str, skip: _Skip) -> None:
    entries.append({"id": record_id, "reason": skip.reason} | ({"detail": skip.detail} if skip.detail else {}))


@contextlib.contextmanager
def _records(out: Path) -> Iterator[Callable[[dict, dict], None]]:
    """A writer of records, counted into the report; records.jsonl appears whole, when the import is done."""
    with atomic_path(out / "records.jsonl") as partial, partial.open("w") as file:

        def write(record: dict, report: dict) -> None:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
            report["records"] += 1
            report["duration_s"] += record["duration"]

        yield write


def _finish(report: dict, out: Path) -> dict:
    report["duration_s"] = round(report["duration_s"], 1)
    report["skipped_reasons"] = dict(Counter(entry["reason"] for entry in report["skipped"]).most_common())
    report["skipped"] = report.pop("skipped")  # the long list last
    write_atomic(out / "import_report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


SPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
SPHINX_SETS = {"cards": "cards.transcription", "librivox": "transcription"}


def import_sphinx(out: Path, root: Path = SPHINX_DATA) -> dict:
    """Debian's pocketsphinx test recordings with their transcripts (the layout above)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not found (apt-get install pocketsphinx-testdata, or make system-deps)")
    report = _new_report("pocketsphinx-testdata", [root], ["real recordings: the questions are their transcripts"])
    out.mkdir(parents=True, exist_ok=True)
    with _records(out) as write:
        for folder, listing in SPHINX_SETS.items():
            for line in (root / folder / listing).read_text().splitlines():
                found = re.fullmatch(r"\s*<s>(.*)</s>\s*\((\S+)\)\s*", line)
                if not found:
                    continue
                report["read"] += 1
                record_id = f"sphinx-{found[2]}"
                try:
                    wav, seconds = _wav(root / folder, f"{found[2]}.wav", "recording")
                except _Skip as skip:
                    _skip(report["skipped"], record_id, skip)
                    continue
                instruction = " ".join(found[1].split())
                write({"id": record_id, "audio": str(wav), "instruction": instruction, "response": None}
                      | {"duration": seconds}, report)  # fmt: skip
    return _finish(report, out)


QUESTION_COLUMNS = ("instruction", "Questions", "question", "Prompt", "prompt")
ANSWER_COLUMNS = ("output", "Answer", "answer_normalized_value", "answers", "参考答案", "reference")
ALPACAEVAL_SUBSETS = ("helpful_base", "vicuna")


def import_voicebench(parquet_paths: list[Path], out: Path, limit: int | None = None) -> dict:
    """VoiceBench parquet files (one subset each) into `out/records.jsonl` and `out/wavs/`; returns the report."""
    paths, out = [Path(path) for path in parquet_paths], Path(out)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (expected a VoiceBench parquet file)")
        if missing := {"audio", "prompt"} - set(pq.ParquetFile(path).schema_arrow.names):
            raise ValueError(f"{path}: no column {', '.join(sorted(missing))} (VoiceBench's layout expected)")
    report = _new_report("VoiceBench", paths, ["response = the subset's `reference` where it has one"])
    with _records(out) as write:
        for path in paths:
            file = pq.ParquetFile(path)
            columns = [c for c in ("audio", "prompt", "reference") if c in file.schema_arrow.names]
            rows = (row for batch in file.iter_batches(batch_size=32, columns=columns) for row in batch.to_pylist())
            for number, row in enumerate(tqdm(rows, total=file.metadata.num_rows, desc=path.stem, unit=" rows")):
                if limit is not None and report["records"] >= limit:
                    break
                report["read"] += 1
                record_id = _safe_name(f"{path.stem}-{number}")
                try:
                    audio = row.get("audio")
                    data = audio.get("bytes") if isinstance(audio, dict) else None
                    if not data:
                        raise _Skip("no question audio")
                    record = _question(record_id, row.get("prompt"), row.get("reference"), io.BytesIO(data), out)
                    write(record, report)
                except _Skip as skip:
                    _skip(report["skipped"], record_id, skip)
    return _finish(report, out)


def import_openaudiobench(subset_dir: Path, out: Path, limit: int | None = None) -> dict:
    """One OpenAudioBench subset folder (`eval_datas/<subset>`) into `out/records.jsonl` and `out/wavs/`."""
    subset_dir, out = Path(subset_dir), Path(out)
    table = subset_dir / f"{subset_dir.name}.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no such file (expected eval_datas/<subset>/<subset>.csv)")
    with table.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    names = list(rows[0]) if rows else []
    question = next((c for c in QUESTION_COLUMNS if c in names), None)
    if question is None or "audio_filename" not in names:
        want = f"audio_filename and one of {', '.join(QUESTION_COLUMNS)}"
        raise ValueError(f"{table}: columns {names}; expected {want} (OpenAudioBench's layout)")
    answer = next((c for c in ANSWER_COLUMNS if c in names), None)
    report = _new_report("OpenAudioBench", [table], [f"question column {question!r}, answer column {answer!r}"])
    with _records(out) as write:
        for number, row in enumerate(tqdm(rows, desc=subset_dir.name, unit=" rows")):
            if limit is not None and report["records"] >= limit:
                break
            report["read"] += 1
            record_id = _safe_name(f"{subset_dir.name}-{number}")
            try:
                if not _text(row.get("audio_filename")):
                    raise _Skip("no audio_filename")
                audio = subset_dir / "audios" / row["audio_filename"].strip()
                if not audio.is_file():
                    raise _Skip("missing audio file", str(audio))
                write(_question(record_id, row.get(question), row.get(answer) if answer else None, audio, out), report)
            except _Skip as skip:
                _skip(report["skipped"], record_id, skip)
    return _finish(report, out)


def _question(record_id: str, question: Any, answer: Any, audio: Path | io.BytesIO, out: Path) -> dict:
    """A benchmark's record: its audio decoded into `out/wavs/<id>.wav` (16 kHz mono; reused on a rerun)."""
    wav = out / "wavs" / f"{record_id}.wav"
    duration = _decoded_wav(audio, wav, "bad audio")
    record = {"id": record_id, "audio": f"wavs/{wav.name}", "instruction": _text(question), "response": None}
    if isinstance(answer, str | int | float) and str(answer).strip():
        record["response"] = str(answer).strip()
    return record | {"duration": round(duration, 3)}


def import_alpacaeval(
    json_path: Path, out: Path, tts: TTSConfig | None = None, subsets: tuple[str, ...] = ALPACAEVAL_SUBSETS,
    limit: int | None = None,
) -> dict:  # fmt: skip
    """AlpacaEval's prompts of `subsets` that can be spoken, spoken by the TTS into `out/wavs/`; returns the report."""
    json_path, out = Path(json_path), Path(out)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no such file (expected alpaca_eval's example/outputs.json)")
    items = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(items, list) or not all(isinstance(i, dict) and "instruction" in i for i in items):
        raise ValueError(f"{json_path}: expected a JSON array of objects with `instruction` (AlpacaEval's layout)")
    tts = tts or TTSConfig(voices=["en-us"], rates=[165])
    speaker = make_tts(tts)
    report = _new_report("AlpacaEval", [json_path], [f"subsets {', '.join(subsets)}; spoken by {engine_name(tts)}"])
    chosen = [(n, i) for n, i in enumerate(items) if i.get("dataset") in subsets]
    with _records(out) as write:
        for number, item in tqdm(chosen, desc="prompts", unit=" prompts"):
            if limit is not None and report["records"] >= limit:
                break
            report["read"] += 1
            record_id = _safe_name(f"{item['dataset']}-{number}")
            text, cause = speakable(str(item["instruction"]), max_words=80)
            if text is None:
                _skip(report["skipped"], record_id, _Skip(cause or "not speakable"))
                continue
            wav = out / "wavs" / f"{record_id}.wav"
            if wav.exists():
                duration = soundfile.info(str(wav)).duration
            else:
                voice, rate, pitch = pick_voice(tts, record_id)
                try:
                    with atomic_path(wav) as partial:
                        duration = speaker.synthesize(text, voice, rate, partial, pitch)
                except TTSError as err:
                    _skip(report["skipped"], record_id, _Skip("tts failed", str(err)))
                    continue
            write({"id": record_id, "audio": f"wavs/{wav.name}", "instruction": text, "response": None}
                  | {"dataset": item["dataset"], "duration": round(duration, 3)}, report)  # fmt: skip
    return _finish(report, out)


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("Import a public spoken-instruction set into omni's records.")
    sets = parser.add_subparsers(dest="set", required=True)
    instructs2s = sets.add_parser("instructs2s", help="InstructS2S-200K: a JSON array and its wavs")
    instructs2s.add_argument("--json", type=Path, required=True, help="instruct_en_200k_data_cosy2.json")
    instructs2s.add_argument("--audio-root", type=Path, required=True, help="the folder its `speech` names are in")
    voiceassistant = sets.add_parser("voiceassistant", help="VoiceAssistant-400K: parquet shards")
    voiceassistant.add_argument("--parquet", type=Path, nargs="+", required=True, help="train-*-of-00325.parquet")
    for command in (instructs2s, voiceassistant):
        command.add_argument("--limit", type=int, help="stop after this many records (a quick look)")
    sphinx = sets.add_parser("sphinx", help="Debian's pocketsphinx test recordings: real people, with transcripts")
    voicebench = sets.add_parser("voicebench", help="VoiceBench: a subset's parquet files")
    voicebench.add_argument("--parquet", type=Path, nargs="+", required=True, help="e.g. sd-qa/usa-*.parquet")
    openaudiobench = sets.add_parser("openaudiobench", help="OpenAudioBench: one eval_datas/<subset> folder")
    openaudiobench.add_argument("--subset", type=Path, required=True, help="eval_datas/<subset>")
    alpacaeval = sets.add_parser("alpacaeval", help="AlpacaEval's helpful_base and vicuna prompts, spoken")
    alpacaeval.add_argument("--json", type=Path, required=True, help="example/outputs.json of alpaca_eval's sdist")
    alpacaeval.add_argument("--voice", default="en-us", help="the espeak-ng voice that speaks them")
    for command in (voicebench, openaudiobench, alpacaeval):
        command.add_argument("--limit", type=int, help="stop after this many records (a quick look)")
    for command in (instructs2s, voiceassistant, sphinx, voicebench, openaudiobench, alpacaeval):
        command.add_argument("--out", type=Path, required=True, help="folder for records.jsonl and the report")
    args = parser.parse_args(argv)
    if args.set == "instructs2s":
        report = import_instructs2s(args.json, args.audio_root, args.out, args.limit)
    elif args.set == "voiceassistant":
        report = import_voiceassistant(args.parquet, args.out, args.limit)
    elif args.set == "voicebench":
        report = import_voicebench(args.parquet, args.out, args.limit)
    elif args.set == "openaudiobench":
        report = import_openaudiobench(args.subset, args.out, args.limit)
    elif args.set == "alpacaeval":
        tts = TTSConfig(voices=[args.voice], rates=[165])
        report = import_alpacaeval(args.json, args.out, tts, limit=args.limit)
    else:
        report = import_sphinx(args.out)
    print(
        f"{report['records']} records ({report['duration_s']} s of questions) from {report['read']} read "
        f"into {args.out / 'records.jsonl'}; skipped: {report['skipped_reasons'] or 'none'}; "
        f"report: {args.out / 'import_report.json'}"
    )


if __name__ == "__main__":
    run_command(main)
