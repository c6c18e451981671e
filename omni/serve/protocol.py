"""The messages of `omni serve`, written down once: what a client sends, what the server answers.

WebSocket `/v1/stream`; a connection is one conversation: it asks any number of questions, one after another,
each answered in the context of its earlier questions and answers (the last max_exchanges of them):

    client -> {"type": "start", "format": "f32", "chunk_size": 10, "sample_rate": 16000}   (all but type optional)
    client -> binary frames: the question as 16 kHz mono PCM, little-endian float32 ("f32") or int16 ("s16"),
              any number of frames of any length; or, with "format": "file", one whole encoded file (wav, flac, ogg)
    client -> {"type": "end"}
    server -> {"type": "accepted", "id": "q1"}                          (after start: a place is held for it)
    server -> {"type": "timing", "name": "prefill", "ms": 41.2}        (ms since the end of the question)
    server -> {"type": "text", "delta": " The"}                         (the answer's text as it is written;
                                                                         text and audio interleave as they come)
    server -> {"type": "audio", "seq": 0, "sample_rate": 16000, "samples": 3840}
              followed by one binary frame: those samples, float32 little-endian
    server -> {"type": "timing", "name": "first_packet", "ms": 188.0}  (right after the first audio frame)
    server -> {"type": "done", "id": "q1", "text": ..., "samples": ..., "sample_rate": ..., "audio_seconds": ...,
               "units": ..., "queued_ms": ..., "first_packet_ms": ..., "total_ms": ..., "context_turns": 2}
                                                                        (context_turns: earlier turns it was given)
    client -> {"type": "interrupt", "played": 24000}                   (while an answer streams: the user spoke over
                                                                         it; played = its samples the client played)
    server -> {"type": "interrupted", "id": "q1", "played": 24000, "heard": "The capital"}
              (no audio of it follows; the conversation keeps what was heard, marked interrupted; "played" left out
              counts all the audio sent. Anything else sent while an answer streams, such as the next question sent
              back to back, is taken after the answer)
    client -> {"type": "reset"}                                         (between questions: a new conversation)
    server -> {"type": "reset"}
    server -> {"type": "error", "kind": "...", "message": "..."}       (instead of the rest, see ERROR_KINDS)

An error ends its question; the server ignores that question's remaining frames up to its "end", and the
connection stays open for the next start. A message over the transport limit (4x max_message_bytes) is never
read: the connection is closed with code 1009.

HTTP `POST /v1/answer?chunk_size=10&sample_rate=16000&stream=false`, body: the question as an encoded file.
Whole (default): the done event with `"wav"` added, the answer as a base64 float32 WAV file. `stream=true`:
NDJSON, the WebSocket's events one a line (no "accepted"), each audio event carrying its samples in `pcm`
(base64 float32 little-endian) instead of a binary frame. Errors: the error event as the body, status 400
(413 too_large, 503 busy, 500 internal). An HTTP question has no conversation: each is answered alone.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ERROR_KINDS = {
    "busy": "every place is taken (max_queue questions at once); try again later",
    "bad_message": "malformed JSON, an unknown type or option, a message out of order",
    "too_large": "one message over max_message_bytes",
    "too_long": "a question over max_seconds",
    "too_short": "a question under omni.audio.MIN_QUESTION_SECONDS",
    "empty_audio": "a question without samples",
    "invalid_audio": "NaN or infinite samples",
    "not_audio": "a file no decoder reads, or PCM frames of the wrong byte length",
    "timeout": "no end within max_seconds + QUESTION_GRACE_S of the start",
    "internal": "the model failed; the server keeps serving",
}
HTTP_STATUS = {"too_large": 413, "busy": 503, "internal": 500}  # other kinds: 400
QUESTION_GRACE_S = 10.0


class ProtocolError(Exception):
    """A bad request: the client gets an error event of this kind, the server goes on."""

    def __init__(self, kind: str, message: str):
        assert kind in ERROR_KINDS, kind
        super().__init__(message)
        self.kind = kind

    def event(self) -> dict[str, Any]:
        return {"type": "error", "kind": self.kind, "message": str(self)}


class Start(BaseModel):
    """Options of one question: `chunk_size` is Omega (units per vocoder call, 0 = the whole answer at once),
    `sample_rate` the rate of the answer's audio."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["start"] = "start"
    format: Literal["f32", "s16", "file"] = "f32"
    chunk_size: int = Field(10, ge=0, le=1000)
    sample_rate: int = Field(16000, ge=8000, le=48000)


def parse_start(options: dict[str, Any]) -> Start:
    try:
        return Start.model_validate(options)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in err.errors())
        raise ProtocolError("bad_message", f"bad start message: {problems}") from None


def parse_text(text: str) -> dict[str, Any]:
    """A client's JSON message; it must be an object with a known "type"."""
    try:
        message = json.loads(text)
    except ValueError as err:
        raise ProtocolError("bad_message", f"not JSON: {err}") from None
    if not isinstance(message, dict) or message.get("type") not in ("start", "end", "reset", "interrupt"):
        raise ProtocolError(
            "bad_message",
            'expected {"type": "start", ...}, {"type": "end"}, {"type": "reset"} or {"type": "interrupt"}',
        )
    return message
