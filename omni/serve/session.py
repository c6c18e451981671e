"""One WebSocket connection of `/v1/stream`: questions in, streamed answers out (`omni.serve.protocol`).

A reader task is the only one to receive from the socket, so the moment a client leaves, even in the
middle of an answer, its place is freed; the session reads the reader's inbox, which is bounded
(a client that floods the server is slowed down by TCP, not buffered). The connection is one
conversation (omni.conversation): each question goes to the model with the earlier turns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from omni.audio import SAMPLE_RATE
from omni.conversation import Conversation
from omni.serve.protocol import QUESTION_GRACE_S, ProtocolError, Start, parse_start, parse_text
from omni.serve.question import Question
from omni.serve.worker import Job, Worker

logger = logging.getLogger("omni.serve")
Message = dict[str, Any]  # an ASGI websocket.receive message: "text" or "bytes"


class ClientSession:
    def __init__(
        self,
        ws: WebSocket,
        worker: Worker,
        max_seconds: float,
        max_message_bytes: int,
        on_error: Callable[[str], None],
        max_exchanges: int | None = 8,
    ):
        self.ws = ws
        self.conversation = Conversation(max_exchanges)
        self.worker = worker
        self.max_seconds = max_seconds
        self.max_message_bytes = max_message_bytes
        self.on_error = on_error  # counts errors by kind
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=8)
        self.job: Job | None = None

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            message = await self.inbox.get()
            while message is not None:
                message = await self._dispatch(message)
        except WebSocketDisconnect:  # a send after the client left
            pass
        finally:
            reader.cancel()
            self._release()

    async def _read(self) -> None:
        try:
            while (message := await self.ws.receive())["type"] != "websocket.disconnect":
                await self.inbox.put(message)
        finally:
            self._release()  # a client that leaves frees its place at once, even mid-answer
            while True:  # the end mark must get in; a departed client's unread messages do not matter
                try:
                    self.inbox.put_nowait(None)
                    break
                except asyncio.QueueFull:
                    self.inbox.get_nowait()

    def _release(self) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None

    async def _dispatch(self, message: Message) -> Message | None:
        """Handles one message outside a question; returns the next message to handle."""
        try:
            if message.get("bytes") is not None:
                raise ProtocolError("bad_message", "audio outside a question: send a start message first")
            options = parse_text(message["text"])
            if options["type"] == "end":
                raise ProtocolError("bad_message", "end without a start")
            if options["type"] == "reset":
                self.conversation.turns.clear()
                await self._send({"type": "reset"})
                return await self.inbox.get()
        except ProtocolError as err:
            await self._fail(err)
            return await self.inbox.get()
        return await self._question(options)

    async def _question(self, options: dict[str, Any]) -> Message | None:
        """One question from its start message; returns the first message after it."""
        deadline = asyncio.get_running_loop().time() + self.max_seconds + QUESTION_GRACE_S
        try:
            start = parse_start(options)
            self.job = self.worker.reserve()
            await self._send({"type": "accepted", "id": self.job.id})
            question = Question(start.format, self.max_seconds, self.max_message_bytes)
            while (message := await self._next(deadline)) is not None:
                if message.get("bytes") is not None:
                    question.add(message["bytes"])
                elif parse_text(message["text"])["type"] == "end":
                    await self._answer(question, start)
                    return await self.inbox.get()
                else:
                    raise ProtocolError("bad_message", "start or reset inside a question: send end first")
            return None
        except ProtocolError as err:
            await self._fail(err)
            self._release()
            return await self._skip_question()

    async def _next(self, deadline: float) -> Message | None:
        try:
            return await asyncio.wait_for(self.inbox.get(), deadline - asyncio.get_running_loop().time())
        except asyncio.TimeoutError:
            raise ProtocolError("timeout", f"no end within {self.max_seconds:g} s + {QUESTION_GRACE_S:g} s") from None

    async def _skip_question(self) -> Message | None:
        """After an error, the failed question's frames up to its end; a new start ends the skipping too."""
        while (message := await self.inbox.get()) is not None:
            if message.get("text") is None:
                continue
            try:
                kind = parse_text(message["text"])["type"]
            except ProtocolError:
                continue
            if kind == "end":
                return await self.inbox.get()
            return message
        return None

    async def _answer(self, question: Question, start: Start) -> None:
        assert self.job is not None
        job, audio, history = self.job, question.audio(), self.conversation.history()
        self.worker.submit(job, audio, start.chunk_size, start.sample_rate, history)
        async for event, pcm in job.events():
            if event["type"] == "done":
                event["context_turns"] = len(history)
                self.conversation.add(audio, event["text"])
            await self._send(event)
            if pcm is not None:
                await self.ws.send_bytes(pcm.tobytes())
            if event["type"] == "done":
                log_done(event, len(audio) / SAMPLE_RATE)
            elif event["type"] == "error":
                self.on_error(event["kind"])
        self._release()

    async def _fail(self, err: ProtocolError) -> None:
        self.on_error(err.kind)
        logger.info("%s error %s: %s", self.job.id if self.job else "-", err.kind, err)
        await self._send(err.event())

    async def _send(self, event: dict[str, Any]) -> None:
        await self.ws.send_json(event)


def log_done(event: dict[str, Any], question_seconds: float) -> None:
    """The log line of an answered question, with its first-packet time."""
    logger.info(
        "%s done: question %.1f s, first packet %s ms, %.1f s of audio, %d ms in all (%d ms queued)",
        event["id"],
        question_seconds,
        event["first_packet_ms"],
        event["audio_seconds"],
        event["total_ms"],
        event["queued_ms"],
    )
