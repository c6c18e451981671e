"""A question's audio and the client's messages, checked without a server."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from omni.serve.protocol import ProtocolError, parse_start, parse_text
from omni.serve.question import Question


def question(format: str = "f32") -> Question:
    return Question(format, max_seconds=2.0, max_message_bytes=100_000)


def test_pcm_frames_of_either_format_join_into_the_question():
    audio = np.sin(np.arange(8000) / 10).astype(np.float32) * 0.5
    floats, ints = question("f32"), question("s16")
    for i in range(0, 8000, 3000):
        floats.add(audio[i : i + 3000].astype("<f4").tobytes())
        ints.add((audio[i : i + 3000] * 32768).astype("<i2").tobytes())
    np.testing.assert_array_equal(floats.audio(), audio)
    np.testing.assert_allclose(ints.audio(), audio, atol=1 / 32768)


def test_a_whole_file_is_decoded_to_16k_mono():
    stereo = np.tile(np.linspace(-0.5, 0.5, 44100, dtype=np.float32)[:, None], (1, 2))
    data = io.BytesIO()
    soundfile.write(data, stereo, 44100, format="FLAC")
    q = question("file")
    q.add(data.getvalue())
    assert len(q.audio()) == 16000


@pytest.mark.parametrize(
    ("format", "messages", "kind"),
    [
        ("f32", [], "empty_audio"),
        ("file", [b""], "empty_audio"),
        ("f32", [np.array([0.1, np.nan] * 4000, "<f4").tobytes()], "invalid_audio"),
        ("f32", [np.full(4000, np.inf, "<f4").tobytes()], "invalid_audio"),
        ("file", [b"not audio at all"], "not_audio"),
        ("s16", [b"\0\0\0"], "not_audio"),
        ("f32", [np.zeros(1000, "<f4").tobytes()], "too_short"),
        ("f32", [np.zeros(20000, "<f4").tobytes()] * 2, "too_long"),
        ("f32", [np.zeros(30000, "<f4").tobytes()], "too_large"),
        ("file", [b"RIFF", b"RIFF"], "bad_message"),
    ],
)
def test_bad_questions_are_refused_by_kind(format, messages, kind):
    q = question(format)
    with pytest.raises(ProtocolError) as refused:
        for message in messages:
            q.add(message)
        q.audio()
    assert refused.value.kind == kind
    assert refused.value.event() == {"type": "error", "kind": kind, "message": str(refused.value)}


def test_messages_and_options():
    assert parse_start({"type": "start"}).model_dump() == {
        "type": "start",
        "format": "f32",
        "chunk_size": 10,
        "sample_rate": 16000,
    }
    assert parse_start({"type": "start", "chunk_size": "0"}).chunk_size == 0  # query strings arrive as text
    for bad in ({"chunk_size": -1}, {"sample_rate": 100}, {"format": "mp3"}, {"colour": "red"}):
        with pytest.raises(ProtocolError, match="bad start message") as refused:
            parse_start({"type": "start", **bad})
        assert refused.value.kind == "bad_message"
    assert parse_text('{"type": "end"}') == {"type": "end"}
    for text in ("{not json", "[]", '{"type": "stop"}'):
        with pytest.raises(ProtocolError) as refused:
            parse_text(text)
        assert refused.value.kind == "bad_message"
