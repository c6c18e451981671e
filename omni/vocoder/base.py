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


class Vocoder(Protocol):
    sample_rate: int  # of the audio it returns, fixed per vocoder
    num_units: int  # unit ids it can speak: [0, num_units)

    def synthesize(self, units: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """float32 audio and the sample where each unit ends."""
        ...


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """A vocoder's audio at another rate (for ASR, or the rate a caller writes); float32."""
    return audio if rate == target else soxr.resample(audio, rate, target).astype(np.float32)


def load_vocoder(directory: str | Path, device: str | torch.device = "cpu") -> Vocoder:
    """A saved unit vocoder of either kind, told by its files: omni's unit-to-mel model (`unit_to_mel.yaml`,
    spoken by its HiFi-GAN) or fairseq's unit HiFi-GAN (`config.json` beside one `g_*` checkpoint, such as
    LLaMA-Omni's `g_00500000`)."""
    from omni.vocoder.code_hifigan import CodeHifiGanVocoder, load_code_hifigan
    from omni.vocoder.mel_unit import MelUnitVocoder
    from omni.vocoder.unit_to_mel import CONFIG_FILE

    directory = Path(directory)
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
