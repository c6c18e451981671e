"""What every unit vocoder offers, so the streaming joiner, generation and evaluations take any of them.

- `MelUnitVocoder` (`omni.vocoder.mel_unit`): the demo's unit-to-mel model followed by a pretrained HiFi-GAN;
- `CodeHifiGanVocoder` (`omni.vocoder.code_hifigan`): fairseq's unit HiFi-GAN, the reference's.

`load_vocoder(directory)` opens a saved one of either kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import soxr
import torch

from omni.precision import native_bf16
from omni.vocoder.hifigan import HifiGanGenerator

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Vocoder(Protocol):
    sample_rate: int  # of the audio it returns, fixed per vocoder
    num_units: int  # unit ids it can speak: [0, num_units)

    @property
    def generator(self) -> HifiGanGenerator:
        """Its HiFi-GAN: where the time goes, and what `dtype` sets."""
        ...

    def synthesize(self, units: Sequence[int], from_unit: int = 0, lead: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """float32 audio and the sample where each unit ends. Only the audio from `lead` samples before unit
        `from_unit` on is wanted (a stream's new units after their left context): a vocoder may leave the work before
        it undone (`omni.vocoder.hifigan.first_frame`), those samples then zeros; the length and the ends are the
        whole's."""
        ...


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """A vocoder's audio at another rate (for ASR, or the rate a caller writes); float32."""
    return audio if rate == target else soxr.resample(audio, rate, target).astype(np.float32)


def waveform_dtype(dtype: str, device: str | torch.device) -> torch.dtype:
    """The HiFi-GAN's dtype. "auto": bf16 on a GPU that runs it natively (`omni.precision.native_bf16`), else fp32 (on
    an AMX CPU a bf16 HiFi-GAN vocoded the demo's first chunks no faster in place: 284 against 250 ms,
    docs/results.md); or "float32", "bfloat16" as named."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" and native_bf16(device) else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"vocoder dtype must be auto, {' or '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def load_vocoder(directory: str | Path, device: str | torch.device = "cpu", dtype: str = "auto") -> Vocoder:
    """A saved unit vocoder of either kind, told by its files: omni's unit-to-mel model (`unit_to_mel.yaml`,
    spoken by its HiFi-GAN) or fairseq's unit HiFi-GAN (`config.json` beside one `g_*` checkpoint, such as
    LLaMA-Omni's `g_00500000`). `dtype` is its HiFi-GAN's (`waveform_dtype`); the unit-to-mel model and the
    durations stay fp32."""
    vocoder = _load(Path(directory), device)
    vocoder.generator.cast(waveform_dtype(dtype, device))
    return vocoder


def _load(directory: Path, device: str | torch.device) -> Vocoder:
    from omni.vocoder.code_hifigan import CodeHifiGanVocoder, load_code_hifigan
    from omni.vocoder.mel_unit import MelUnitVocoder
    from omni.vocoder.unit_to_mel import CONFIG_FILE

    if (directory / CONFIG_FILE).is_file():
        vocoder = MelUnitVocoder.from_pretrained(directory)
        vocoder.unit_to_mel.to(device)
        vocoder.hifigan.to(device)
        return vocoder
    generators = sorted(p for p in directory.glob("g_*") if p.is_file())
    if (directory / "config.json").is_file() and len(generators) == 1:
        code = CodeHifiGanVocoder(load_code_hifigan(generators[0], directory / "config.json"))
        code.model.to(device)
        return code
    raise FileNotFoundError(
        f"{directory}: not a unit vocoder directory (expected {CONFIG_FILE}, or config.json and one g_* checkpoint)"
    )
