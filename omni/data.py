"""The dataset contract: spoken instructions with text answers (and, for stage 2, speech units).

A dataset is a JSON-lines manifest or a Hugging Face `datasets` directory (`save_to_disk`) whose
records hold:

    audio        path to a sound file (relative to the manifest's folder, or absolute), or
                 {"array": [...], "sampling_rate": int}, or {"bytes": ..., "path": ...}   required
    response     the answer text the LLM should give                                    required
    instruction  the instruction as text (for text-parity evaluation)                    optional
    units        the answer's speech units, a list of ints in [0, K) (stage 2)            optional
    response_audio  the answer spoken (a path), from which units are extracted          optional
    history      earlier turns of the conversation, oldest first, alternating from a question:
                 [{"role": "user"|"assistant", "text": ..., "audio": path (questions)}]   optional
    id           a name for the record (default: its line/row number)                    optional

A record with `history` is one answered turn of a dialogue: `audio` and `response` are the current
question and its answer, and the prompt renders the earlier turns before them (omni/prompt.py).

Every record is checked when the dataset is opened, and every bad one is reported at once with the
file, the record and the field; a clip too short to give one speech embedding is bad too (given the
adaptor stride). With `on_bad_record="skip"` bad records are dropped instead and listed in `skipped`.
Audio is read with soundfile, mixed to mono and resampled to 16 kHz on the fly; audio found bad only
then (NaN samples) fails the read, or in skip mode is logged and the next record stands in.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args

import numpy as np
import soundfile
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from omni.audio import SAMPLE_RATE, AudioError, load_audio, mel_windows, to_mono_16k, truncation, window_frames
from omni.augment import AugmentConfig, augment
from omni.config import EncoderConfig
from omni.prompt import IGNORE_INDEX, PromptBuilder, Turn, check_history

if TYPE_CHECKING:
    from omni.model import OmniModel

OnBadRecord = Literal["error", "skip"]
Questions = Literal["speech", "speech_or_text", "none"]  # how a dataset's records are asked (SpeechInstructionDataset)
SHOWN_PROBLEMS = 20  # bad records a DataError lists in full; the rest are counted


@dataclass(frozen=True)
class Problem:
    """What is wrong with one record: where it is (file and line/row), which field, and why."""

    where: str
    field: str | None
    reason: str

    def __str__(self) -> str:
        return f"{_place(self.where, self.field)}: {self.reason}"


class DataError(ValueError):
    """A dataset or record that cannot be used; `problem` is set when one record is at fault."""

    def __init__(self, message: str, problem: Problem | None = None):
        super().__init__(message)
        self.problem = problem


@dataclass
class Example:
    id: str
    audio: np.ndarray | None  # float32 mono 16 kHz; None for a text question (stage 2 only)
    response: str | None
    instruction: str | None
    units: list[int] | None
    index: int | None = None  # its position in the dataset (a stand-in for a record that failed to load has its own)
    history: tuple[Turn, ...] = ()  # earlier turns of its conversation


class SpeechInstructionDataset(Dataset):
    """`num_units` (stage 2) requires every record to carry units and checks them against [0, K).

    `adaptor_stride` refuses clips too short to give one speech embedding when a clip is encoded at
    its own length (leave it None when the encoder pads every clip to 30 s). `skip_log`, when set,
    is the file that records skipped when loaded are appended to. `questions` says how records are asked:
    "speech" (each has audio), "speech_or_text" (stage 2: a record without audio is asked as its `instruction`'s
    words; stage 2 learns from answers, and answers are cheaper to come by than spoken questions) or "none" (TTS
    pretraining of the speech decoder: answers and their units alone; no question is read). `path` may list several
    JSON-lines manifests, read as one set (a set of extra answers beside the spoken one, say): each record's files are
    found from its own manifest. `augment` (stage 1's training set) changes each question's audio as it is loaded,
    drawn from (its seed, the epoch set by `set_epoch`, the record's index): omni/augment.py.
    """

    def __init__(
        self,
        path: str | Path | list[str | Path],
        *,
        require_response: bool = True,
        check_audio_files: bool = True,
        num_units: int | None = None,
        on_bad_record: OnBadRecord = "error",
        adaptor_stride: int | None = None,
        questions: Questions = "speech",
        augment: AugmentConfig | None = None,
    ):
        if on_bad_record not in get_args(OnBadRecord):
            raise DataError(f"on_bad_record must be one of {get_args(OnBadRecord)}, got {on_bad_record!r}")
        if questions not in get_args(Questions):
            raise DataError(f"questions must be one of {get_args(Questions)}, got {questions!r}")
        self.paths = [Path(p) for p in path] if isinstance(path, list | tuple) else [Path(path)]
        if not self.paths:
            raise DataError("no dataset given (an empty list of manifests)")
        self.path = self.paths[0]
        self.name = " + ".join(map(str, self.paths))  # what messages about the whole set call it
        self.require_response = require_response
        self.num_units = num_units
        self.on_bad_record = on_bad_record
        self.adaptor_stride = adaptor_stride
        self.questions = questions
        self.augment = augment if augment is not None and augment.enabled else None
        self.epoch = 0
        self.skip_log: Path | None = None
        self.skipped_at_load: dict[int, dict] = {}
        found = self._open()  # (manifest, line/row number) -> problem
        total = len(self.rows) + len(found)
        if total == 0:
            raise DataError(f"{self.name}: dataset is empty")
        good = []
        for index in tqdm(range(len(self.rows)), desc=f"checking {self.path.name}", disable=len(self.rows) < 1000):
            try:
                self._check(index, self.rows[index], check_audio_files)
                good.append(index)
            except DataError as err:
                found[self._numbers[index]] = err.problem
        problems = [found[number] for number in sorted(found)]
        self.skipped = [asdict(problem) for problem in problems]
        if problems and (on_bad_record == "error" or not good):
            raise DataError(bad_records_report(self.name, problems, total, skipping=on_bad_record == "skip"))
        if problems:
            self._keep(good)

    def _open(self) -> dict[tuple[int, int], Problem]:
        """Read the records into `rows` and (manifest, line/row number) into `_numbers`; returns unparsable lines."""
        if len(self.paths) == 1 and self.path.is_dir():
            import datasets

            self.rows = datasets.load_from_disk(str(self.path))
            self._row_name, self._numbers = "row", [(0, i) for i in range(len(self.rows))]
            return {}
        self.rows, self._numbers, problems = [], [], {}
        self._row_name = "line"
        for m, path in enumerate(self.paths):
            if not path.is_file():
                several = " (a list takes .jsonl manifests only)" if len(self.paths) > 1 else ""
                raise DataError(
                    f"{path}: no such dataset (expected a .jsonl manifest or a datasets directory){several}"
                )
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    problems[m, number] = Problem(f"{path}, line {number}", None, f"invalid JSON: {err}")
                    continue
                if not isinstance(row, dict):
                    reason = f"expected a JSON object, got {type(row).__name__}"
                    problems[m, number] = Problem(f"{path}, line {number}", None, reason)
                    continue
                self.rows.append(relocated(row, path.parent, self.path.parent) if m else row)
                self._numbers.append((m, number))
        return problems

    def _keep(self, indices: list[int]) -> None:
        """Drop every record but these."""
        self.rows = [self.rows[i] for i in indices] if isinstance(self.rows, list) else self.rows.select(indices)
        self._numbers = [self._numbers[i] for i in indices]

    def _record(self, index: int, row: dict) -> str:
        name = f" (id {row['id']!r})" if "id" in row else ""
        manifest, number = self._numbers[index]
        return f"{self.paths[manifest]}, {self._row_name} {number}{name}"

    def audio_path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.path.parent / path

    def _source(self, audio: str | dict) -> tuple[Any, int] | io.BytesIO | Path:
        """Where a record's audio is: samples and their rate in the record, encoded bytes, or a file."""
        if isinstance(audio, str):
            return self.audio_path(audio)
        if audio.get("array") is not None:
            return audio["array"], int(audio["sampling_rate"])
        if audio.get("bytes"):
            return io.BytesIO(audio["bytes"])
        return self.audio_path(audio["path"])

    def _check(self, index: int, row: dict, check_audio_files: bool) -> None:
        """Raise a DataError carrying the record's first problem, if it has one."""

        def fail(field: str, reason: str) -> NoReturn:
            problem = Problem(self._record(index, row), field, reason)
            raise DataError(str(problem), problem)

        text_question = self.questions == "speech_or_text" and row.get("audio") is None
        if text_question and not (isinstance(row.get("instruction"), str) and row["instruction"].strip()):
            fail("instruction", "expected the question's text (a record without audio is a text question)")
        asked = self.questions != "none" and not text_question
        if asked and (reason := self._audio_problem(row.get("audio"), check_audio_files)):
            fail("audio", reason)
        response = row.get("response")
        if response is None and self.require_response:
            fail("response", "missing")
        if response is not None and (not isinstance(response, str) or not response.strip()):
            fail("response", "expected non-empty text")
        instruction = row.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            fail("instruction", "expected text")
        history = row.get("history")
        if history is not None and (problem := self._history_problem(history, check_audio_files)):
            fail(*problem)
        units = row.get("units")
        if units is not None and not _is_unit_list(units):
            fail("units", "expected a list of non-negative integers")
        if self.num_units is not None:
            if not units:
                fail("units", "missing or empty (stage 2 trains on the answer's speech units)")
            if reason := units_problem(units, self.num_units):
                fail("units", reason)

    def _history_problem(self, history: Any, check_files: bool) -> tuple[str, str] | None:
        """(field, reason) of the first problem of a record's earlier turns, or None."""
        if not isinstance(history, list):
            return "history", f"expected a list of turns, got {type(history).__name__}"
        for i, turn in enumerate(history):
            if not isinstance(turn, dict):
                return f"history[{i}]", "expected an object with role, text and (questions) audio"
            audio = turn.get("audio")
            if audio is not None and not isinstance(audio, str):
                return f"history[{i}].audio", f"expected a path, got {type(audio).__name__}"
            if audio is not None and check_files and not self.audio_path(audio).is_file():
                return f"history[{i}].audio", f"file not found: {self.audio_path(audio)}"
        if problem := check_history(self._turns(history)):
            return f"history[{problem[0]}].{problem[1]}", problem[2]
        return None

    def _turns(self, history: list[dict] | None) -> tuple[Turn, ...]:
        """A record's earlier turns, their audio paths made absolute."""
        return tuple(
            Turn(t.get("role"), t.get("text"), str(self.audio_path(t["audio"])) if t.get("audio") else None)
            for t in history or []
        )

    def _audio_problem(self, audio: Any, check_files: bool) -> str | None:
        """What is wrong with a record's audio, if anything; with `check_files`, its file or bytes are
        opened (not decoded) to check they are readable and long enough to give a speech embedding."""
        if audio is None:
            return "missing" + ("" if self.questions != "speech" else " (questions without audio serve stage 2 only)")
        if isinstance(audio, str) and not self.audio_path(audio).is_file():
            return f"file not found: {self.audio_path(audio)}"
        if isinstance(audio, dict):
            in_record = audio.get("array") is not None and audio.get("sampling_rate")
            if not (in_record or audio.get("bytes") or audio.get("path")):
                return "expected a path, {'array', 'sampling_rate'} or {'bytes'|'path'}"
        elif not isinstance(audio, str):
            return f"expected a path or a mapping, got {type(audio).__name__}"
        if not check_files:
            return None
        source = self._source(audio)
        what = f"audio file {source}" if isinstance(source, Path) else "audio"
        try:
            samples, rate, notes = _length(source)
        except Exception as err:  # soundfile raises several types for unreadable input
            return f"unreadable {what}: {err}"
        if cut := truncation(notes):
            return f"{what} is {cut} ({samples / rate:.3f} s of audio)"
        if samples == 0:
            return f"{what} is empty"
        if self.adaptor_stride and round(samples * SAMPLE_RATE / rate) < shortest_clip(self.adaptor_stride):
            return _too_short(samples / rate, self.adaptor_stride)  # soxr resamples to round(samples * ratio)
        return None

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, field: str) -> list[Any]:
        """One field of every record, without reading any audio (None where a record lacks it)."""
        if isinstance(self.rows, list):
            return [row.get(field) for row in self.rows]
        if field not in self.rows.column_names:
            return [None] * len(self.rows)
        return list(self.rows[field])

    def signature(self, with_units: bool = True) -> str:
        """A hash of each record: id, audio reference, response, history and, unless left out, units. The hidden-state
        cache leaves them out (what the LLM sees): re-extracting units keeps cached states valid."""
        import hashlib

        if not isinstance(self.rows, list):
            return self.rows._fingerprint  # datasets' own content hash
        entries = []
        for row in self.rows:
            audio = row.get("audio")
            if isinstance(audio, str):
                path = self.audio_path(audio)
                audio = [str(path), path.stat().st_size, path.stat().st_mtime_ns]
            entry = [row.get("id"), row.get("response"), audio, row.get("units") if with_units else None]
            if audio is None:  # a text question: the LLM reads its words
                entry.append(row.get("instruction"))
            if row.get("history"):  # a conversation's earlier turns are what the LLM sees too
                entry.append(row["history"])
            entries.append(entry)
        return hashlib.sha1(json.dumps(entries, sort_keys=True, default=str).encode()).hexdigest()

    def _load_audio(self, index: int, row: dict) -> np.ndarray:
        record = self._record(index, row)
        where = _place(record, "audio")
        source = self._source(row["audio"])
        try:
            if isinstance(source, tuple):
                return to_mono_16k(np.asarray(source[0]), source[1], where)
            if isinstance(source, io.BytesIO):
                return _read_bytes(source, where)
            return load_audio(source, where)
        except AudioError as err:
            raise DataError(str(err), Problem(record, "audio", str(err).removeprefix(f"{where}: "))) from err

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentation draws are made (the trainer sets it before each epoch)."""
        self.epoch = epoch

    def _question_audio(self, index: int, row: dict) -> np.ndarray | None:
        if row.get("audio") is None or self.questions == "none":
            return None
        audio = self._load_audio(index, row)
        if self.augment is None:
            return audio
        changed = augment(audio, self.augment, np.random.default_rng([self.augment.seed, self.epoch, index]))
        shortest = shortest_clip(self.adaptor_stride) if self.adaptor_stride else 1
        return changed if len(changed) >= shortest else audio  # sped up below one speech embedding: as it was

    def _example(self, index: int) -> Example:
        row = self.rows[index]
        manifest, number = self._numbers[index]
        return Example(
            id=str(row.get("id", f"{manifest}:{number}" if manifest else number)),
            audio=self._question_audio(index, row),
            response=row.get("response"),
            instruction=row.get("instruction"),
            units=row.get("units"),
            index=index,
            history=self._turns(row.get("history")),
        )

    def __getitem__(self, index: int) -> Example:
        """In skip mode a record that fails to load is logged and the next loadable one stands in: every
        process then still yields the same number of examples, as DDP and DeepSpeed need."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        for step in range(len(self)):
            current = (index + step) % len(self)
            if current in self.skipped_at_load:
                continue
            try:
                return self._example(current)
            except DataError as err:
                if self.on_bad_record == "error" or err.problem is None:
                    raise
                self._skip_at_load(current, err.problem)
        raise DataError(f"{self.name}: no record could be loaded ({len(self.skipped_at_load)} skipped when read)")

    def _skip_at_load(self, index: int, problem: Problem) -> None:
        """Remember a record that failed to load, once per process, and append it to `skip_log`."""
        entry = asdict(problem) | {"at": "load"}
        self.skipped_at_load[index] = entry
        if self.skip_log is not None:
            with Path(self.skip_log).open("a") as log:
                log.write(json.dumps(entry) + "\n")


def units_problem(units: list[int], num_units: int) -> str | None:
    """Why unit ids cannot train a K-unit decoder, or None: ids outside [0, K) come from another codebook and must
    never be trained on silently."""
    bad = sorted({u for u in units if not 0 <= u < num_units})
    if not bad:
        return None
    shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
    return (
        f"unit ids {shown} are outside [0, {num_units}); these units come from another codebook "
        "(the released InstructS2S-200K holds CosyVoice tokens, for instance): re-extract them"
    )


def _place(where: str, field: str | None) -> str:
    return f"{where}, field {field!r}" if field else where


def relocated(row: dict, folder: Path, target: Path) -> dict:
    """The record with its relative file paths (`audio`, `response_audio`, a dialogue's `history[].audio`), read
    from `folder`, made relative to `target` instead; relative still, so that a set's signature does not depend
    on where the checkout lives. Serves a later manifest of a list (paths resolve against the first one's folder)
    and a manifest copied into another folder (make units)."""

    def moved(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).is_absolute():
            return os.path.relpath(os.path.abspath(folder / value), os.path.abspath(target))
        if isinstance(value, dict) and isinstance(value.get("path"), str) and value.get("bytes") is None:
            return value | {"path": moved(value["path"])}
        return value

    row = dict(row)
    for field in ("audio", "response_audio"):
        if row.get(field) is not None:
            row[field] = moved(row[field])
    if isinstance(row.get("history"), list):
        row["history"] = [
            t | {"audio": moved(t["audio"])} if isinstance(t, dict) and t.get("audio") else t for t in row["history"]
        ]
    return row


def bad_records_report(path: Path | str, problems: list[Problem], total: int, skipping: bool) -> str:
    """One message for every bad record: the first ones in full, then how many more."""
    if skipping:
        head = f"{path}: all {total} records are bad, none left to train on"
    else:
        head = f"{path}: {len(problems)} of {total} records are bad (data.on_bad_record=skip trains on the rest)"
    lines = [head, *map(str, problems[:SHOWN_PROBLEMS])]
    if len(problems) > SHOWN_PROBLEMS:
        lines.append(f"... and {len(problems) - SHOWN_PROBLEMS} more bad records")
    return "\n".join(lines)


def _length(source: tuple[Any, int] | io.BytesIO | Path) -> tuple[int, int, str]:
    """Samples, sampling rate and libsndfile's notes (truncation shows there) of a record's audio, not decoded."""
    if isinstance(source, tuple):
        return len(source[0]), source[1], ""
    info = soundfile.info(source if isinstance(source, io.BytesIO) else str(source))
    return info.frames, info.samplerate, info.extra_info


def _read_bytes(source: io.BytesIO, where: str) -> np.ndarray:
    try:
        audio, rate = soundfile.read(source, dtype="float32")
    except Exception as err:  # soundfile raises several types for unreadable input
        raise AudioError(f"{where}: cannot read audio bytes: {err}") from err
    return to_mono_16k(audio, rate, where)


@functools.cache
def shortest_clip(adaptor_stride: int) -> int:
    """The fewest 16 kHz samples that give one speech embedding, found with the collator's own arithmetic
    (mel frames per window, then encoder and adaptor strides) for a clip encoded at its own length."""
    return next(n for n in itertools.count(1) if speech_embedding_count(window_frames(n, False), adaptor_stride))


def _too_short(seconds: float, stride: int) -> str:
    shortest = shortest_clip(stride) / SAMPLE_RATE
    return f"clip of {seconds:.2f} s gives no speech embedding (at least {shortest:.2f} s at adaptor stride {stride})"


def _is_unit_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in value)


def speech_embedding_count(frames_per_window: list[int], adaptor_stride: int) -> int:
    """How many embeddings the encoder + adaptor make of a clip's windows."""
    return sum((f + 1) // 2 for f in frames_per_window) // adaptor_stride


class SpeechCollator:
    """Examples -> a padded batch: token ids with speech slots, labels, and mel windows.

    A conversation's earlier questions, when the prompt takes them as speech, are clips of their own
    before the current one: `clips_per_row` says how many clips each row has. `label_history` (default:
    the prompt's `train_on`) labels earlier answers; stage 2 sets it False, reading the current answer only.
    """

    def __init__(
        self,
        prompt: PromptBuilder,
        encoder: EncoderConfig,
        n_mels: int,
        adaptor_stride: int,
        padding_side: str = "right",
        with_response: bool = True,
        label_history: bool | None = None,
    ):
        self.prompt = prompt
        self.encoder = encoder
        self.n_mels = n_mels
        self.stride = adaptor_stride
        self.padding_side = padding_side
        self.with_response = with_response
        self.label_history = label_history
        tokenizer = prompt.tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def for_model(
        cls,
        model: OmniModel,
        padding_side: str = "right",
        with_response: bool = True,
        label_history: bool | None = None,
    ) -> SpeechCollator:
        """The collator matching a model's prompt, encoder input mode, mel bins and adaptor stride."""
        c = model.config
        return cls(
            model.prompt, c.encoder, model.encoder.n_mels, c.adaptor.stride, padding_side, with_response, label_history
        )

    def _clip(self, audio: np.ndarray, where: str) -> tuple[list[torch.Tensor], int]:
        """A clip's mel windows and how many speech embeddings they make."""
        windows = mel_windows(audio, self.n_mels, self.encoder.pad_to_30s, self.encoder.long_audio, where=where)
        count = speech_embedding_count([w.shape[-1] for w in windows], self.stride)
        if count == 0:  # the dataset refuses such clips when given the stride; never train on no speech
            raise DataError(f"example {where!r}: {_too_short(len(audio) / SAMPLE_RATE, self.stride)}")
        return windows, count

    def __call__(self, examples: list[Example]) -> dict[str, Any]:
        windows, windows_per_clip, clips_per_row, ids, labels = [], [], [], [], []
        for ex in examples:
            earlier = self.prompt.speech_turns(ex.history)
            clips = [t.audio if isinstance(t.audio, np.ndarray) else load_audio(t.audio) for t in earlier]
            counts = []
            current = [] if ex.audio is None else [ex.audio]  # a text question takes no clip: its words are the turn
            for n, clip in enumerate([*clips, *current]):
                clip_windows, count = self._clip(clip, ex.id if n == len(clips) else f"{ex.id}, history question {n}")
                windows += clip_windows
                windows_per_clip.append(len(clip_windows))
                counts.append(count)
            clips_per_row.append(len(counts))
            response = ex.response if self.with_response else None
            question = ex.instruction if ex.audio is None else None
            seq, lab = self.prompt.encode(counts, response, ex.history, self.label_history, question)
            ids.append(seq)
            labels.append(lab)
        width = max(len(s) for s in ids)
        batch_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        batch_labels = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, (seq, lab) in enumerate(zip(ids, labels, strict=True)):
            span = slice(0, len(seq)) if self.padding_side == "right" else slice(width - len(seq), width)
            batch_ids[row, span] = torch.tensor(seq)
            batch_labels[row, span] = torch.tensor(lab)
            mask[row, span] = 1
        frames = torch.tensor([w.shape[-1] for w in windows], dtype=torch.long)
        mels = torch.zeros(len(windows), self.n_mels, int(frames.max()) if windows else 0)
        for i, w in enumerate(windows):
            mels[i, :, : w.shape[-1]] = w
        return {
            "input_ids": batch_ids,
            "attention_mask": mask,
            "labels": batch_labels,
            "mels": mels,
            "mel_frames": frames,
            "windows_per_clip": torch.tensor(windows_per_clip, dtype=torch.long),
            "clips_per_row": torch.tensor(clips_per_row),
        }
