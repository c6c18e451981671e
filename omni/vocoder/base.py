"""What every unit vocoder offers, so the streaming joiner, generation and evaluations take any of them.

- `MelUnitVocoder` (`omni.vocoder.mel_unit`): the demo's unit-to-mel model followed by a pretrained HiFi-GAN;
- `CodeHifiGanVocoder` (`omni.vocoder.code_hifigan`): fairseq's unit HiFi-GAN, the reference's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import soxr


class Vocoder(Protocol):
    sample_rate: int  # of the audio it returns, fixed per vocoder
    num_units: int  # unit ids it can speak: [0, num_units)

    def synthesize(self, units: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """float32 audio and the sample where each unit ends."""
        ...


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """A vocoder's audio at another rate (for ASR, or the rate a caller writes); float32."""
    return audio if rate == target else soxr.resample(audio, rate, target).astype(np.float32)
