"""The dataset contract: spoken instructions with text answers (and, for stage 2, speech units).

A dataset is a JSON-lines manifest or a Hugging Face `datasets` directory (`save_to_disk`) whose
records hold:

    audio        path to a sound file (relative to the manifest's folder, or absolute), or
                 {"array": [...], "sampling_rate": int}, or {"bytes": ..., "path": ...}   required
    response     the answer text the LLM should give                                    required
    instruction  the instruction as text (for text-parity evaluation)                    optional
    units        the answer's speech units, a list of ints in [0, K) (stage 2)            optional
    response_audio  the answer spoken (a path), from which units are extracted          optional
    id           a name for the record (default: its line/row number)                    optional

Every record is checked when the dataset is opened, and a bad one fails with the file, the record
and the field. Audio is read with soundfile, mixed to mono and resampled to 16 kHz on the fly.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from omni.audio import AudioError, load_audio, mel_windows, to_mono_16k
from omni.config import EncoderConfig
from omni.prompt import IGNORE_INDEX, PromptBuilder
from omni.units import UnitError, check_units

if TYPE_CHECKING:
    from omni.model import OmniModel


class DataError(ValueError):
    pass


@dataclass
class Example:
    id: str
    audio: np.ndarray  # float32 mono 16 kHz
    response: str | None
    instruction: str | None
    units: list[int] | None


class SpeechInstructionDataset(Dataset):
    """`num_units` (stage 2) requires every record to carry units and checks them against [0, K)."""

    def __init__(
        self,
        path: str | Path,
        require_response: bool = True,
        check_audio_files: bool = True,
        num_units: int | None = None,
    ):
        self.path = Path(path)
        self.require_response = require_response
        self.num_units = num_units
        if self.path.is_dir():
            import datasets

            self.rows = datasets.load_from_disk(str(self.path))
            self._row_name = "row"
        elif self.path.is_file():
            self.rows = self._read_jsonl(self.path)
            self._row_name = "line"
        else:
            raise DataError(f"{self.path}: no such dataset (expected a .jsonl manifest or a datasets directory)")
        if len(self.rows) == 0:
            raise DataError(f"{self.path}: dataset is empty")
        for index in tqdm(range(len(self.rows)), desc=f"checking {self.path.name}", disable=len(self.rows) < 1000):
            self._check(index, self.rows[index], check_audio_files)

    @staticmethod
    def _read_jsonl(path: Path) -> list[dict]:
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {number}: invalid JSON: {err}") from err
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row | {"_number": number})
        return rows

    def _where(self, index: int, row: dict, field: str) -> str:
        number = row.get("_number", index)
        name = f" (id {row['id']!r})" if "id" in row else ""
        return f"{self.path}, {self._row_name} {number}{name}, field {field!r}"

    def _audio_path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.path.parent / path

    def _check(self, index: int, row: dict, check_audio_files: bool) -> None:
        def fail(field: str, message: str) -> None:
            raise DataError(f"{self._where(index, row, field)}: {message}")

        audio = row.get("audio")
        if audio is None:
            fail("audio", "missing")
        if isinstance(audio, str):
            path = self._audio_path(audio)
            if not path.is_file():
                fail("audio", f"file not found: {path}")
            if check_audio_files:
                try:
                    info = soundfile.info(str(path))
                except Exception as err:
                    fail("audio", f"unreadable audio file {path}: {err}")
                if info.frames == 0:
                    fail("audio", f"audio file is empty: {path}")
        elif isinstance(audio, dict):
            if not ({"array", "sampling_rate"} <= audio.keys() or audio.get("bytes") or audio.get("path")):
                fail("audio", "expected a path, {'array', 'sampling_rate'} or {'bytes'|'path'}")
        else:
            fail("audio", f"expected a path or a mapping, got {type(audio).__name__}")
        response = row.get("response")
        if response is None and self.require_response:
            fail("response", "missing")
        if response is not None and (not isinstance(response, str) or not response.strip()):
            fail("response", "expected non-empty text")
        instruction = row.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            fail("instruction", "expected text")
        units = row.get("units")
        if units is not None and not _is_unit_list(units):
            fail("units", "expected a list of non-negative integers")
        if self.num_units is not None:
            if not units:
                fail("units", "missing or empty (stage 2 trains on the answer's speech units)")
            try:
                check_units(units, self.num_units, self._where(index, row, "units"))
            except UnitError as err:
                raise DataError(str(err)) from err

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, field: str) -> list[Any]:
        """One field of every record, without reading any audio (None where a record lacks it)."""
        if isinstance(self.rows, list):
            return [row.get(field) for row in self.rows]
        if field not in self.rows.column_names:
            return [None] * len(self.rows)
        return list(self.rows[field])

    def signature(self) -> str:
        """A hash of what the LLM sees of each record (id, audio reference, response), not of its units:
        re-extracting units keeps cached hidden states valid."""
        import hashlib

        if not isinstance(self.rows, list):
            return self.rows._fingerprint  # datasets' own content hash
        entries = []
        for row in self.rows:
            audio = row["audio"]
            if isinstance(audio, str):
                path = self._audio_path(audio)
                audio = [str(path), path.stat().st_size, path.stat().st_mtime_ns]
            entries.append([row.get("id"), row.get("response"), audio])
        return hashlib.sha1(json.dumps(entries, sort_keys=True, default=str).encode()).hexdigest()

    def _load_audio(self, index: int, row: dict) -> np.ndarray:
        where = self._where(index, row, "audio")
        audio = row["audio"]
        try:
            if isinstance(audio, str):
                return load_audio(self._audio_path(audio), where)
            if "array" in audio and audio["array"] is not None:
                return to_mono_16k(np.asarray(audio["array"]), int(audio["sampling_rate"]), where)
            if audio.get("bytes"):
                data, rate = soundfile.read(io.BytesIO(audio["bytes"]), dtype="float32")
                return to_mono_16k(data, rate, where)
            return load_audio(self._audio_path(audio["path"]), where)
        except AudioError as err:
            raise DataError(str(err)) from err

    def __getitem__(self, index: int) -> Example:
        row = self.rows[index]
        return Example(
            id=str(row.get("id", row.get("_number", index))),
            audio=self._load_audio(index, row),
            response=row.get("response"),
            instruction=row.get("instruction"),
            units=row.get("units"),
        )


def _is_unit_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in value)


def speech_embedding_count(frames_per_window: list[int], adaptor_stride: int) -> int:
    """How many embeddings the encoder + adaptor make of a clip's windows."""
    return sum((f + 1) // 2 for f in frames_per_window) // adaptor_stride


class SpeechCollator:
    """Examples -> a padded batch: token ids with speech slots, labels, and mel windows."""

    def __init__(
        self,
        prompt: PromptBuilder,
        encoder: EncoderConfig,
        n_mels: int,
        adaptor_stride: int,
        padding_side: str = "right",
        with_response: bool = True,
    ):
        self.prompt = prompt
        self.encoder = encoder
        self.n_mels = n_mels
        self.stride = adaptor_stride
        self.padding_side = padding_side
        self.with_response = with_response
        tokenizer = prompt.tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def for_model(cls, model: OmniModel, padding_side: str = "right", with_response: bool = True) -> SpeechCollator:
        """The collator matching a model's prompt, encoder input mode, mel bins and adaptor stride."""
        c = model.config
        return cls(model.prompt, c.encoder, model.encoder.n_mels, c.adaptor.stride, padding_side, with_response)

    def __call__(self, examples: list[Example]) -> dict[str, Any]:
        windows, windows_per_clip, ids, labels = [], [], [], []
        for ex in examples:
            clip = mel_windows(ex.audio, self.n_mels, self.encoder.pad_to_30s, self.encoder.long_audio, where=ex.id)
            windows += clip
            windows_per_clip.append(len(clip))
            count = speech_embedding_count([w.shape[-1] for w in clip], self.stride)
            seq, lab = self.prompt.encode(count, ex.response if self.with_response else None)
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
        frames = torch.tensor([w.shape[-1] for w in windows])
        mels = torch.zeros(len(windows), self.n_mels, int(frames.max()))
        for i, w in enumerate(windows):
            mels[i, :, : w.shape[-1]] = w
        return {
            "input_ids": batch_ids,
            "attention_mask": mask,
            "labels": batch_labels,
            "mels": mels,
            "mel_frames": frames,
            "windows_per_clip": torch.tensor(windows_per_clip),
        }
