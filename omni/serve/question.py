"""A spoken question as it arrives: PCM frames or one encoded file, checked against the server's limits.

Limits are checked as the bytes come, so an over-long question is refused while it is still being
spoken, not after it has filled memory; the whole question is checked once at the end by the library's own
`question_audio`, the same limits and messages as `omni generate`.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile

from omni.audio import SAMPLE_RATE, AudioError, question_audio
from omni.serve.protocol import ProtocolError

PCM_DTYPES = {"f32": np.dtype("<f4"), "s16": np.dtype("<i2")}


class Question:
    def __init__(self, format: str, max_seconds: float, max_message_bytes: int):
        self.format = format
        self.max_seconds = max_seconds
        self.max_message_bytes = max_message_bytes
        self.frames: list[np.ndarray] = []
        self.samples = 0
        self.file: bytes | None = None

    def add(self, data: bytes) -> None:
        """One binary message of the question."""
        if len(data) > self.max_message_bytes:
            limit = self.max_message_bytes
            raise ProtocolError("too_large", f"message of {len(data)} bytes, over the limit of {limit}")
        if self.format == "file":
            if self.file is not None:
                raise ProtocolError("bad_message", 'format "file" takes the whole file in one binary message')
            self.file = data
            return
        dtype = PCM_DTYPES[self.format]
        if len(data) % dtype.itemsize:
            raise ProtocolError("not_audio", f"{self.format} frame of {len(data)} bytes, not whole samples")
        frame = np.frombuffer(data, dtype)
        self.samples += len(frame)
        self._check_length(self.samples / SAMPLE_RATE)
        self.frames.append(frame)

    def audio(self) -> np.ndarray:
        """The whole question, float32 mono at 16 kHz; ProtocolError for empty, NaN, undecodable, too short or long."""
        try:
            return question_audio(*self._samples(), self.max_seconds)
        except AudioError as err:
            raise ProtocolError(err.kind, str(err).removeprefix("question: ")) from None

    def _samples(self) -> tuple[np.ndarray, int]:
        """The question's samples (mono, or (samples, channels) from a file) and their rate."""
        if self.format == "file":
            return decode_file(self.file or b"")
        if not self.frames:
            return np.zeros(0, np.float32), SAMPLE_RATE
        audio = np.concatenate(self.frames).astype(np.float32)
        return (audio / 32768.0 if self.format == "s16" else audio), SAMPLE_RATE

    def _check_length(self, seconds: float) -> None:
        """While the question streams in: refused as soon as it is too long."""
        if seconds > self.max_seconds:
            raise ProtocolError("too_long", f"question over the limit of {self.max_seconds:g} s")


def decode_file(data: bytes) -> tuple[np.ndarray, int]:
    """An encoded file (anything libsndfile reads) -> float32 samples and their rate."""
    if not data:
        return np.zeros(0, np.float32), SAMPLE_RATE
    try:
        return soundfile.read(io.BytesIO(data), dtype="float32")
    except Exception as err:  # libsndfile raises several types for unreadable input
        raise ProtocolError("not_audio", f"not an audio file ({getattr(err, 'error_string', None) or err})") from None
