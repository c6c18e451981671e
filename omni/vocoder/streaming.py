"""Units to audio chunk by chunk, as the speech decoder emits them, with any `Vocoder`.

`StreamingVocoder` joins chunks two ways. "bare" is the reference's: each chunk vocoded alone and the
pieces concatenated, so every boundary cuts the sound mid-phone (its quality falls at small chunks).
"crossfade" vocodes each chunk after `context_units` earlier units, keeps only the new units' audio,
and blends the first `overlap_ms` of it with the end of the previous chunk, which was held back for
that: no seam, at the cost of `overlap_ms` of extra delay per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from omni.vocoder.base import Vocoder


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
