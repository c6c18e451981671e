"""Spoken answers with their units and durations, for training a unit vocoder.

Records are the stage-2 manifest's (`units`, `unit_durations`, `response_audio`); the target is the
log-mel spectrogram of the answer's speech as the mel vocoder expects it (resampled to its rate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import soxr
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from omni.audio import SAMPLE_RATE, load_audio
from omni.units import UnitError, check_units
from omni.vocoder.mel import MelConfig, log_mel
from omni.vocoder.unit_to_mel import LOG_MEL_FLOOR


class UnitSpeechDataset(Dataset):
    """Targets are computed on first use and kept (about 130 KB per 5 s answer): later epochs read no audio."""

    def __init__(self, path: str | Path, num_units: int, mel: MelConfig):
        self.path = Path(path)
        self.mel = mel
        self._mels: dict[int, torch.Tensor] = {}
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such manifest")
        self.rows = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            where = f"{self.path}, line {number}"
            for field in ("units", "unit_durations", "response_audio"):
                if not row.get(field):
                    raise UnitError(f"{where}, field {field!r}: missing (build units with make units)")
            if len(row["units"]) != len(row["unit_durations"]) or min(row["unit_durations"]) < 1:
                raise UnitError(f"{where}, field 'unit_durations': expected one positive duration per unit")
            check_units(row["units"], num_units, f"{where}, field 'units'")
            audio = Path(row["response_audio"])
            self.rows.append(row | {"response_audio": audio if audio.is_absolute() else self.path.parent / audio})

    def __len__(self) -> int:
        return len(self.rows)

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
