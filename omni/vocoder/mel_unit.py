"""The demo's unit vocoder: units -> log-mel (`UnitToMel`, trained here) -> a pretrained HiFi-GAN's waveform.

It speaks at the mel vocoder's rate, `MEL_CONFIG.sample_rate` (22.05 kHz). A trained unit-to-mel directory
names the HiFi-GAN checkpoint it was trained for (`omni.vocoder.unit_to_mel.hifigan_reference`; the demo's recipe
trains for the real universal generator of `make assets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from omni.vocoder.hifigan import MEL_CONFIG, HifiGanGenerator, first_frame, load_hifigan
from omni.vocoder.mel import MelConfig
from omni.vocoder.unit_to_mel import UnitToMel, hifigan_reference


class MelUnitVocoder:
    def __init__(self, unit_to_mel: UnitToMel, hifigan: HifiGanGenerator, mel: MelConfig = MEL_CONFIG):
        self.unit_to_mel = unit_to_mel.eval()
        self.hifigan = hifigan.eval()
        self.mel = mel
        self.sample_rate = mel.sample_rate
        self.num_units = unit_to_mel.config.num_units

    @property
    def generator(self) -> HifiGanGenerator:
        """The waveform generator, the costly part (`load_vocoder` sets its dtype)."""
        return self.hifigan

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, hifigan: str | Path | None = None, contrast: float | None = None
    ) -> MelUnitVocoder:
        """`hifigan` overrides the generator the model names; `contrast` the one it was saved with (`UnitToMel`)."""
        hifigan = hifigan or hifigan_reference(directory)
        if hifigan is None:
            raise FileNotFoundError(f"{directory}: names no HiFi-GAN checkpoint (hifigan.txt); give one (hifigan=...)")
        return cls(UnitToMel.from_pretrained(directory, contrast), load_hifigan(hifigan))

    @torch.no_grad()
    def speak_mel(self, mel: torch.Tensor, from_frame: int = 0) -> np.ndarray:
        """Log-mel (frames, n_mels) -> float32 audio at `sample_rate` (`from_frame`: `HifiGanGenerator.forward`'s)."""
        return self.hifigan(mel.T[None], from_frame)[0, 0].float().cpu().numpy()

    @torch.no_grad()
    def synthesize(self, units: Sequence[int], from_unit: int = 0, lead: int = 0) -> tuple[np.ndarray, np.ndarray]:
        device = next(self.hifigan.parameters()).device
        mel, durations = self.unit_to_mel.generate(torch.as_tensor(list(units), device=device))
        c = self.unit_to_mel.config
        ends = torch.round(durations.cumsum(0).float() * c.mel_rate / c.unit_rate).long() * self.mel.hop
        ends = np.minimum(ends.cpu().numpy(), len(mel) * self.mel.hop)
        return self.speak_mel(mel, first_frame(ends, from_unit, lead, self.mel.hop)), ends
