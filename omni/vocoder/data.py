"""Spoken answers with their units and durations, for training a unit vocoder.

Records are the stage-2 manifest's (`units`, `unit_durations`, `response_audio`); the target is the
log-mel spectrogram of the answer's speech as the mel vocoder expects it (resampled to its rate). Bad
records are all reported at once, or left out and listed in `skipped` (`on_bad_record`), as in omni/data.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import soxr
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from omni.audio import SAMPLE_RATE, load_audio
from omni.data import DataError, OnBadRecord, Problem, bad_records_report, units_problem
from omni.vocoder.mel import MelConfig, log_mel
from omni.vocoder.unit_to_mel import LOG_MEL_FLOOR


class UnitSpeechDataset(Dataset):
    """Targets are computed on first use and kept (about 130 KB per 5 s answer): later epochs read no audio."""

    def __init__(
        self, path: str | Path | list[str | Path], num_units: int, mel: MelConfig, on_bad_record: OnBadRecord = "error"
    ):
        """`path`: a JSON-lines manifest, or a list of them read as one set."""
        paths = [Path(p) for p in path] if isinstance(path, list | tuple) else [Path(path)]
        if not paths:
            raise DataError("no dataset given (an empty list of manifests)")
        self.path = " + ".join(map(str, paths))
        self.mel = mel
        self._mels: dict[int, torch.Tensor] = {}
        self.rows, problems, total = [], [], 0
        for manifest in paths:
            if not manifest.is_file():
                raise FileNotFoundError(f"{manifest}: no such manifest")
            lines = [(n, line) for n, line in enumerate(manifest.read_text().splitlines(), start=1) if line.strip()]
            total += len(lines)
            for number, line in lines:
                try:
                    self.rows.append(self._checked(line, num_units, manifest.parent))
                except ValueError as err:
                    problems.append(Problem(f"{manifest}, line {number}", getattr(err, "field", None), str(err)))
        if problems and (on_bad_record == "error" or not self.rows):
            raise DataError(bad_records_report(self.path, problems, total, skipping=on_bad_record == "skip"))
        self.skipped = [{"where": p.where, "field": p.field, "reason": p.reason} for p in problems]

    def _checked(self, line: str, num_units: int, folder: Path) -> dict[str, Any]:
        """One record, its answer audio path made absolute; a ValueError says what is wrong."""
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        for field in ("units", "unit_durations", "response_audio"):
            if not row.get(field):
                raise _FieldError(field, "missing (build units with make units)")
        if len(row["units"]) != len(row["unit_durations"]) or min(row["unit_durations"]) < 1:
            raise _FieldError("unit_durations", "expected one positive duration per unit")
        if reason := units_problem(row["units"], num_units):
            raise _FieldError("units", reason)
        audio = Path(row["response_audio"])
        audio = audio if audio.is_absolute() else folder / audio
        if not audio.is_file():
            raise _FieldError("response_audio", f"file not found: {audio}")
        return row | {"response_audio": audio}

    def __len__(self) -> int:
        return len(self.rows)

    def signature(self) -> str:
        """A hash of the records and of their answer audio files (path, size, modification time)."""
        entries = [
            [row, row["response_audio"].stat().st_size, row["response_audio"].stat().st_mtime_ns] for row in self.rows
        ]
        return hashlib.sha1(json.dumps(entries, sort_keys=True, default=str).encode()).hexdigest()

    def target(self, index: int) -> torch.Tensor:
        """The answer's log-mel (frames, n_mels) at the mel vocoder's rate."""
        if index not in self._mels:
            audio = soxr.resample(load_audio(self.rows[index]["response_audio"]), SAMPLE_RATE, self.mel.sample_rate)
            self._mels[index] = log_mel(torch.from_numpy(audio), self.mel).T.contiguous()
        return self._mels[index]

    def mean_mel(self) -> torch.Tensor:
        """Mean log-mel per bin over every frame of every answer (n_mels,)."""
        total = sum(self.target(i).sum(0) for i in tqdm(range(len(self)), desc="mean log-mel", leave=False))
        return total / sum(len(self.target(i)) for i in range(len(self)))

    def check_unit_rate(self, unit_rate: float, mel_rate: float, tolerance: float = 0.1) -> None:
        """Raise when the units' durations and the speech disagree on how long answers last: units made at
        another frame rate (pooled Whisper frames, HuBERT) than the model's `unit_rate` would train silently
        on stretched or squeezed targets."""
        wrong = []
        for i, row in enumerate(self.rows):
            said, heard = sum(row["unit_durations"]) / unit_rate, len(self.target(i)) / mel_rate
            if abs(said - heard) > tolerance * heard + 0.1:
                wrong.append(f"{row.get('id', i)}: {said:.2f} s of unit frames, {heard:.2f} s of speech")
        if wrong:
            raise DataError(
                f"{self.path}, field 'unit_durations': {len(wrong)} of {len(self.rows)} answers last another time "
                f"than their speech at unit_rate {unit_rate:g} frames per second ({'; '.join(wrong[:3])}); set "
                "model.unit_rate to the units' frame rate (frames_per_second in their report.json)"
            )

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {
            "id": row.get("id", str(index)),
            "units": torch.tensor(row["units"]),
            "durations": torch.tensor(row["unit_durations"]),
            "mel": self.target(index),
        }


def collate_unit_speech(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(i["units"]) for i in items])
    frames = torch.tensor([len(i["mel"]) for i in items])
    units = torch.zeros(len(items), int(lengths.max()), dtype=torch.long)
    durations = torch.zeros_like(units)
    mels = torch.full((len(items), int(frames.max()), items[0]["mel"].shape[1]), LOG_MEL_FLOOR)
    for row, item in enumerate(items):
        units[row, : lengths[row]] = item["units"]
        durations[row, : lengths[row]] = item["durations"]
        mels[row, : frames[row]] = item["mel"]
    return {"units": units, "lengths": lengths, "durations": durations, "mels": mels, "frames": frames}


class _FieldError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
