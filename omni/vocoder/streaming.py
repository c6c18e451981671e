"""Units to audio, whole or chunk by chunk as the speech decoder emits them.

Two vocoders share one interface (`synthesize(units) -> audio, where each unit ends`):
- `MelUnitVocoder`: the demo's unit-to-mel model followed by a pretrained HiFi-GAN (22.05 kHz);
- `CodeHifiGanVocoder`: fairseq's unit HiFi-GAN (the reference's, 16 kHz), loaded without fairseq.

`StreamingVocoder` joins chunks two ways. "bare" is the reference's: each chunk vocoded alone and the
pieces concatenated, so every boundary cuts the sound mid-phone (its quality falls at small chunks).
"crossfade" vocodes each chunk after `context_units` earlier units, keeps only the new units' audio,
and blends the first `overlap_ms` of it with the end of the previous chunk, which was held back for
that: no seam, at the cost of `overlap_ms` of extra delay per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import soxr
import torch

from omni.vocoder.hifigan import MEL_CONFIG, CodeHifiGan, HifiGanGenerator, hifigan_asset_dir, load_hifigan
from omni.vocoder.mel import MelConfig
from omni.vocoder.unit_to_mel import UnitToMel

HIFIGAN_FILE = "hifigan.txt"  # beside a trained unit-to-mel model: the mel vocoder it was trained for


class Vocoder(Protocol):
    sample_rate: int
    num_units: int  # unit ids it can speak: [0, num_units)

    def synthesize(self, units: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """float32 audio and the sample where each unit ends."""
        ...


class MelUnitVocoder:
    def __init__(self, unit_to_mel: UnitToMel, hifigan: HifiGanGenerator, mel: MelConfig = MEL_CONFIG):
        self.unit_to_mel = unit_to_mel.eval()
        self.hifigan = hifigan.eval()
        self.mel = mel
        self.sample_rate = mel.sample_rate
        self.num_units = unit_to_mel.config.num_units

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, hifigan: str | Path | None = None, contrast: float | None = None
    ) -> MelUnitVocoder:
        """`contrast` overrides the one the model was saved with (see `UnitToMel`)."""
        directory = Path(directory)
        if hifigan is None and (directory / HIFIGAN_FILE).is_file():
            hifigan = (directory / HIFIGAN_FILE).read_text().strip()
        hifigan = hifigan or hifigan_asset_dir() / "generator_universal.pth.tar"
        return cls(UnitToMel.from_pretrained(directory, contrast), load_hifigan(hifigan))

    @torch.no_grad()
    def speak_mel(self, mel: torch.Tensor) -> np.ndarray:
        """Log-mel (frames, n_mels) -> float32 audio at `sample_rate`."""
        weight = next(self.hifigan.parameters())
        return self.hifigan(mel.T[None].to(weight))[0, 0].float().cpu().numpy()

    @torch.no_grad()
    def synthesize(self, units: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        device = next(self.hifigan.parameters()).device
        mel, durations = self.unit_to_mel.generate(torch.as_tensor(list(units), device=device))
        audio = self.speak_mel(mel)
        c = self.unit_to_mel.config
        ends = torch.round(durations.cumsum(0).float() * c.mel_rate / c.unit_rate).long() * self.mel.hop
        return audio, np.minimum(ends.cpu().numpy(), len(audio))


class CodeHifiGanVocoder:
    def __init__(self, model: CodeHifiGan):
        self.model = model.eval()
        self.sample_rate = 16000
        self.num_units = model.code_config.num_embeddings
        self.hop = int(np.prod(model.config.upsample_rates))

    @torch.no_grad()
    def synthesize(self, units: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        device = next(self.model.parameters()).device
        units = torch.as_tensor(list(units), device=device)
        durations = self.model.durations(units)
        audio = self.model(units).float().cpu().numpy()
        return audio, (durations.cumsum(0) * self.hop).cpu().numpy()


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    return audio if rate == target else soxr.resample(audio, rate, target).astype(np.float32)


class StreamingVocoder:
    def __init__(
        self,
        vocoder: Vocoder,
        join: Literal["crossfade", "bare"] = "crossfade",
        context_units: int = 20,
        overlap_ms: float = 20.0,
    ):
        if join not in ("crossfade", "bare"):
            raise ValueError(f"join must be 'crossfade' or 'bare', got {join!r}")
        self.vocoder = vocoder
        self.join = join
        self.context_units = context_units
        self.overlap = int(vocoder.sample_rate * overlap_ms / 1000)
        self.history: list[int] = []
        self.tail = np.zeros(0, dtype=np.float32)

    def push(self, units: Sequence[int]) -> np.ndarray:
        """New units -> the audio that can play now."""
        units = list(units)
        if not units:
            return np.zeros(0, dtype=np.float32)
        if self.join == "bare":
            self.history += units
            return self.vocoder.synthesize(units)[0]
        context = self.history[-self.context_units :] if self.context_units else []
        audio, ends = self.vocoder.synthesize(context + units)
        start = int(ends[len(context) - 1]) if context else 0
        overlap = min(len(self.tail), start)
        new = audio[start - overlap :].copy()
        if overlap:
            fade = np.linspace(0.0, 1.0, overlap, dtype=np.float32)
            new[:overlap] = self.tail[-overlap:] * (1 - fade) + new[:overlap] * fade
        self.history += units
        keep = min(self.overlap, len(new))
        self.tail = new[len(new) - keep :]
        return new[: len(new) - keep]

    def flush(self) -> np.ndarray:
        """The held-back end of the last chunk."""
        tail, self.tail = self.tail, np.zeros(0, dtype=np.float32)
        return tail


def vocode_in_chunks(
    vocoder: Vocoder, units: Sequence[int], chunk: int, join: Literal["crossfade", "bare"] = "crossfade"
) -> np.ndarray:
    """The whole answer as a stream of `chunk`-unit pieces would sound (chunk <= 0: all at once)."""
    if chunk <= 0:
        return vocoder.synthesize(units)[0]
    stream = StreamingVocoder(vocoder, join)
    pieces = [stream.push(units[i : i + chunk]) for i in range(0, len(units), chunk)]
    return np.concatenate([*pieces, stream.flush()])
