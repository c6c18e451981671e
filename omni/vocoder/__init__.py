"""Vocoders that turn log-mel spectrograms or discrete speech units back into waveforms, in pure torch:

- mel.py           HiFi-GAN V1's log-mel front-end (`MelConfig`, `log_mel`)
- hifigan.py       HiFi-GAN V1 generator and its checkpoints (`load_hifigan`, `MEL_CONFIG`: its 22.05 kHz features)
- unit_to_mel.py   the demo's units -> log-mel model (`UnitToMel`) and its saved directory
- data.py          spoken answers with units, for training it (`UnitSpeechDataset`)
- base.py          the `Vocoder` protocol every unit vocoder follows, and `resample`
- mel_unit.py      `MelUnitVocoder`: unit-to-mel + HiFi-GAN, at `MEL_CONFIG.sample_rate`
- code_hifigan.py  `CodeHifiGanVocoder`: fairseq's unit HiFi-GAN (the reference's), at `CODE_SAMPLE_RATE`
- streaming.py     `StreamingVocoder` / `vocode_in_chunks`: any `Vocoder`, chunk by chunk, joined bare or crossfaded
- process.py       `Vocoding` / `VocoderProcess`: many answers' streams, vocoded here or in a child process beside
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Re-exported lazily, so that importing one submodule (say `omni.vocoder.mel`) imports no other.
_EXPORTS = {
    "CODE_SAMPLE_RATE": "code_hifigan",
    "CodeHifiGanVocoder": "code_hifigan",
    "load_code_hifigan": "code_hifigan",
    "MEL_CONFIG": "hifigan",
    "load_hifigan": "hifigan",
    "MelUnitVocoder": "mel_unit",
    "StreamingVocoder": "streaming",
    "vocode_in_chunks": "streaming",
    "Vocoder": "base",
    "resample": "base",
}
__all__ = [
    "CODE_SAMPLE_RATE",
    "MEL_CONFIG",
    "CodeHifiGanVocoder",
    "MelUnitVocoder",
    "StreamingVocoder",
    "Vocoder",
    "load_code_hifigan",
    "load_hifigan",
    "resample",
    "vocode_in_chunks",
]

if TYPE_CHECKING:
    from omni.vocoder.base import Vocoder, resample
    from omni.vocoder.code_hifigan import CODE_SAMPLE_RATE, CodeHifiGanVocoder, load_code_hifigan
    from omni.vocoder.hifigan import MEL_CONFIG, load_hifigan
    from omni.vocoder.mel_unit import MelUnitVocoder
    from omni.vocoder.streaming import StreamingVocoder, vocode_in_chunks


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"omni.vocoder.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
