"""Units to audio chunk by chunk, as the speech decoder emits them, with any `Vocoder`.

`StreamingVocoder` joins chunks two ways. "bare" is the reference's: each chunk vocoded alone and the
pieces concatenated, so every boundary cuts the sound mid-phone (its quality falls at small chunks).
"crossfade" vocodes each chunk after `context_units` earlier units, keeps only the new units' audio,
and blends the first `overlap_ms` of it with the end of the previous chunk, which was held back for
that: no seam, at the cost of `overlap_ms` of extra delay per chunk. With `lookahead_units` the last units of
each chunk are held back too and spoken with the next chunk, vocoded now only as the right context of the ones
before them: a unit's sound and length depend on what follows it, which a chunk's last units otherwise never see.
A chunk then plays `lookahead_units` fewer units (none later: they come at the next chunk or the flush).
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
        lookahead_units: int = 0,
    ):
        if join not in ("crossfade", "bare"):
            raise ValueError(f"join must be 'crossfade' or 'bare', got {join!r}")
        self.vocoder = vocoder
        self.join = join
        self.context_units = context_units
        self.overlap = int(vocoder.sample_rate * overlap_ms / 1000)
        self.lookahead = lookahead_units if join == "crossfade" else 0
        self.history: list[int] = []  # the units spoken so far
        self.held: list[int] = []  # units not spoken yet: the right context of the last chunk
        self.tail = np.zeros(0, dtype=np.float32)

    def push(self, units: Sequence[int]) -> np.ndarray:
        """New units -> the audio that can play now."""
        units = list(units)
        if not units:
            return np.zeros(0, dtype=np.float32)
        if self.join == "bare":
            self.history += units
            return self.vocoder.synthesize(units)[0]
        waiting = self.held + units
        speak = waiting[: max(0, len(waiting) - self.lookahead)]
        self.held = waiting[len(speak) :]
        return self._speak(speak, self.held)

    def _speak(self, units: list[int], after: list[int]) -> np.ndarray:
        """The audio of `units`, vocoded between their left context and `after` (right context, not spoken)."""
        if not units:
            return np.zeros(0, dtype=np.float32)
        context = self.history[-self.context_units :] if self.context_units else []
        audio, ends = self.vocoder.synthesize(context + units + after, len(context), len(self.tail))
        start = int(ends[len(context) - 1]) if context else 0
        stop = int(ends[len(context) + len(units) - 1])
        overlap = min(len(self.tail), start)
        new = audio[start - overlap : stop].copy()
        if overlap:
            fade = np.linspace(0.0, 1.0, overlap, dtype=np.float32)
            new[:overlap] = self.tail[-overlap:] * (1 - fade) + new[:overlap] * fade
        self.history += units
        keep = min(self.overlap, len(new))
        self.tail = new[len(new) - keep :]
        return new[: len(new) - keep]

    def flush(self) -> np.ndarray:
        """The held-back units and end of the last chunk."""
        held, self.held = self.held, []
        last = self._speak(held, [])
        tail, self.tail = self.tail, np.zeros(0, dtype=np.float32)
        return np.concatenate([last, tail])


def vocode_in_chunks(
    vocoder: Vocoder,
    units: Sequence[int],
    chunk: int,
    join: Literal["crossfade", "bare"] = "crossfade",
    lookahead_units: int = 0,
) -> np.ndarray:
    """The whole answer as a stream of `chunk`-unit pieces would sound (chunk <= 0: all at once)."""
    if chunk <= 0:
        return vocoder.synthesize(units)[0]
    stream = StreamingVocoder(vocoder, join, lookahead_units=lookahead_units)
    pieces = [stream.push(units[i : i + chunk]) for i in range(0, len(units), chunk)]
    return np.concatenate([*pieces, stream.flush()])
