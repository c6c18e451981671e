"""Python clients of `omni serve`.

    from omni.serve.client import ask, ask_ws
    reply = ask("http://127.0.0.1:8000", "question.wav")          # HTTP: the whole answer
    reply = ask_ws("http://127.0.0.1:8000", "question.wav")       # WebSocket: streamed, then joined
    print(reply.text, reply.first_packet_ms); soundfile.write("answer.wav", reply.audio, reply.sample_rate)

`stream` yields the WebSocket's events as they come (audio events with their samples in "pcm").
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile
import websockets

from omni.audio import SAMPLE_RATE, load_audio


class ServeError(Exception):
    def __init__(self, event: dict[str, Any]):
        super().__init__(f"{event.get('kind')}: {event.get('message')}")
        self.kind = event.get("kind")


@dataclass
class Reply:
    text: str
    audio: np.ndarray  # float32 at sample_rate
    sample_rate: int
    first_packet_ms: float | None  # measured by the server, from the end of the question
    done: dict[str, Any]  # the done event


def ask(
    url: str, question: str | Path | bytes, chunk_size: int = 10, sample_rate: int = 16000, timeout: float = 300
) -> Reply:
    """POSTs an audio file (a path, or its bytes) to `url`/v1/answer; ServeError for an error event."""
    data = question if isinstance(question, bytes) else Path(question).read_bytes()
    params = {"chunk_size": chunk_size, "sample_rate": sample_rate}
    body = httpx.post(f"{url.rstrip('/')}/v1/answer", params=params, content=data, timeout=timeout).json()
    if body.get("type") == "error":
        raise ServeError(body)
    audio, rate = soundfile.read(io.BytesIO(base64.b64decode(body["wav"])), dtype="float32")
    return Reply(body["text"], audio, rate, body["first_packet_ms"], body)


def ask_ws(url: str, question: str | Path | np.ndarray, chunk_size: int = 10, sample_rate: int = 16000) -> Reply:
    """The same over the WebSocket, the question sent as 100 ms float32 frames."""

    async def collect() -> Reply:
        pieces = []
        async for event in stream(url, question, chunk_size, sample_rate):
            if event["type"] == "audio":
                pieces.append(event["pcm"])
            elif event["type"] == "error":
                raise ServeError(event)
            elif event["type"] == "done":
                audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
                return Reply(event["text"], audio, event["sample_rate"], event["first_packet_ms"], event)
        raise ServeError({"kind": "closed", "message": "the connection closed before the answer was done"})

    return asyncio.run(collect())


async def stream(
    url: str,
    question: str | Path | np.ndarray,
    chunk_size: int = 10,
    sample_rate: int = 16000,
    frame_seconds: float = 0.1,
    realtime: bool = False,
) -> AsyncIterator[dict[str, Any]]:
    """Asks one question over a new WebSocket (`realtime`: frames paced as a microphone sends them) and
    yields the events up to and including "done" or "error"."""
    audio = question if isinstance(question, np.ndarray) else load_audio(question)
    async with websockets.connect(ws_url(url), max_size=None) as ws:
        start = {"type": "start", "format": "f32", "chunk_size": chunk_size, "sample_rate": sample_rate}
        await ws.send(json.dumps(start))
        step = int(frame_seconds * SAMPLE_RATE)
        for i in range(0, len(audio), step):
            await ws.send(audio[i : i + step].astype("<f4").tobytes())
            if realtime:
                await asyncio.sleep(frame_seconds)
        await ws.send(json.dumps({"type": "end"}))
        async for event in read_events(ws):
            yield event
            if event["type"] in ("done", "error"):
                return


async def read_events(ws: websockets.ClientConnection) -> AsyncIterator[dict[str, Any]]:
    """The server's events; an audio event's binary frame is attached to it as "pcm" (float32)."""
    async for message in ws:
        event = json.loads(message)
        if event["type"] == "audio":
            event["pcm"] = np.frombuffer(await ws.recv(), "<f4")
        yield event


def ws_url(url: str) -> str:
    """http://host:port -> ws://host:port/v1/stream (https -> wss)."""
    base = url.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/v1/stream"
