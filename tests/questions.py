"""Bad spoken questions as files, for the tests of `omni generate` and of the server: one table, and the message
each must get from both, made by the one function both entry points call (`omni.audio.question_audio`)."""

from __future__ import annotations

import io

import numpy as np
import soundfile

from omni.audio import SAMPLE_RATE, AudioError, question_audio


def _wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    subtype = "PCM_16" if np.isfinite(samples).all() else "FLOAT"  # small files; NaN needs floats
    soundfile.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype=subtype)
    return buffer.getvalue()


def noise(seconds: float) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def bad_questions(max_seconds: float) -> dict[str, tuple[bytes, str, str]]:
    """kind -> (the file's bytes, the error kind, the message) for a server or command limited to `max_seconds`."""
    samples = {
        "empty file": np.zeros(0, np.float32),
        "too_short": noise(0.05),
        "too_long": noise(max_seconds + 1.5),
        "invalid_audio": np.full(SAMPLE_RATE, np.nan, np.float32),
    }
    table = {}
    for name, audio in samples.items():
        try:
            question_audio(audio, SAMPLE_RATE, max_seconds, "question")
        except AudioError as err:
            body = b"" if name == "empty file" else _wav(audio)
            table[name] = (body, err.kind, str(err).removeprefix("question: "))
    assert len(table) == len(samples), "every question in the table must be refused"
    return table
