"""One request's answer: the generator's events turned into protocol events (`omni.serve.protocol`).

Audio is resampled to the rate the client asked for by one streaming resampler per answer, so the
chunks join without seams and together are exactly the whole answer at that rate; times are measured
from the end of the question, the moment a user starts waiting.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import soxr

from omni.speech_generator import Event

Out = tuple[dict[str, Any], np.ndarray | None]  # an event and, for audio events, its samples


class Answer:
    def __init__(self, request_id: str, vocoder_rate: int, sample_rate: int, asked_at: float, started_at: float):
        self.id = request_id
        self.sample_rate = sample_rate
        self.asked_at = asked_at  # perf_counter at the end of the question
        self.queued_ms = 1000 * (started_at - asked_at)
        self.resampler = None if vocoder_rate == sample_rate else soxr.ResampleStream(vocoder_rate, sample_rate, 1)
        self.seq = 0
        self.samples = 0
        self.first_packet_ms: float | None = None

    def ms(self) -> float:
        return round(1000 * (time.perf_counter() - self.asked_at), 1)

    def feed(self, event: Event) -> list[Out]:
        """The protocol events one generator event gives (none for units, which the client does not need)."""
        if event.kind == "prefill":
            return [({"type": "timing", "name": "prefill", "ms": self.ms()}, None)]
        if event.kind == "text":
            return [({"type": "text", "delta": event.text}, None)]
        if event.kind == "audio":
            return self._audio(event.audio, last=False)
        if event.kind == "done":
            return [*self._audio(np.zeros(0, np.float32), last=True), (self._done(event), None)]
        return []

    def _audio(self, audio: np.ndarray, last: bool) -> list[Out]:
        if self.resampler is not None:
            audio = self.resampler.resample_chunk(audio.astype(np.float32), last=last)
        if not len(audio):
            return []
        header = {"type": "audio", "seq": self.seq, "sample_rate": self.sample_rate, "samples": len(audio)}
        out: list[Out] = [(header, audio.astype("<f4"))]
        self.seq += 1
        self.samples += len(audio)
        if self.first_packet_ms is None:
            self.first_packet_ms = self.ms()
            out.append(({"type": "timing", "name": "first_packet", "ms": self.first_packet_ms}, None))
        return out

    def _done(self, event: Event) -> dict[str, Any]:
        return {
            "type": "done",
            "id": self.id,
            "text": event.text,
            "samples": self.samples,
            "sample_rate": self.sample_rate,
            "audio_seconds": round(self.samples / self.sample_rate, 3),
            "units": len(event.units),
            "queued_ms": round(self.queued_ms, 1),
            "first_packet_ms": self.first_packet_ms,
            "total_ms": self.ms(),
        }
