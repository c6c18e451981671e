"""One WebSocket connection of `/v1/stream`: questions in, streamed answers out (`omni.serve.protocol`).

A reader task is the only one to receive from the socket, so the moment a client leaves, even in the
middle of an answer, its place is freed; the session reads the reader's inbox, which is bounded
(a client that floods the server is slowed down by TCP, not buffered). The connection is one
conversation (omni.conversation): each question goes to the model with the earlier turns.

Barge-in: while an answer streams, the session still reads the inbox. An `interrupt` (sent when the user speaks
over the answer) stops it at the model's next token step; no audio of it follows the `interrupted` event, and the
conversation keeps the answer cut where the client heard it: the text written up to the last audio chunk the client
had played (`played` samples; all it was sent, if it does not say). Other messages that arrive meanwhile (the next
question, sent back to back) wait their turn. An answer is written faster than it is played, so the user often
speaks over one the server has finished: an `interrupt` between questions cuts the last answer the same way.
"""

from __future__ import annotations

import asyncio
import collections
import json
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
        self.later: collections.deque[Message | None] = collections.deque()  # read while an answer streamed
        self.job: Job | None = None
        self.last: tuple[str, _Heard] | None = None  # the last answer's id and what it sent: an interrupt may cut it

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            message = await self._receive()
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
            if options["type"] == "interrupt":
                await self._cut_last(options)
                return await self._receive()
            if options["type"] == "reset":
                self.conversation.turns.clear()
                self.last = None
                await self._send({"type": "reset"})
                return await self._receive()
        except ProtocolError as err:
            await self._fail(err)
            return await self._receive()
        return await self._question(options)

    async def _question(self, options: dict[str, Any]) -> Message | None:
        """One question from its start message; returns the first message after it."""
        self.last = None
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
                    return await self._answer(question, start)
                else:
                    raise ProtocolError("bad_message", "start, reset or interrupt inside a question: send end first")
            return None
        except ProtocolError as err:
            await self._fail(err)
            self._release()
            return await self._skip_question()

    async def _next(self, deadline: float) -> Message | None:
        try:
            return await asyncio.wait_for(self._receive(), deadline - asyncio.get_running_loop().time())
        except asyncio.TimeoutError:
            raise ProtocolError("timeout", f"no end within {self.max_seconds:g} s + {QUESTION_GRACE_S:g} s") from None

    async def _skip_question(self) -> Message | None:
        """After an error, the failed question's frames up to its end; a new start ends the skipping too."""
        while (message := await self._receive()) is not None:
            if message.get("text") is None:
                continue
            try:
                kind = parse_text(message["text"])["type"]
            except ProtocolError:
                continue
            if kind == "end":
                return await self._receive()
            return message
        return None

    async def _answer(self, question: Question, start: Start) -> Message | None:
        """Stream the answer while reading the inbox (an interrupt stops it); returns the first message after it."""
        assert self.job is not None
        job, audio, history = self.job, question.audio(), self.conversation.history()
        self.worker.submit(job, audio, start.chunk_size, start.sample_rate, history)
        heard = _Heard()
        events = aiter(job.events())
        next_event = asyncio.ensure_future(anext(events, None))
        next_message = asyncio.ensure_future(self.inbox.get())
        try:
            while True:
                done, _ = await asyncio.wait({next_event, next_message}, return_when=asyncio.FIRST_COMPLETED)
                if next_message in done:
                    message = next_message.result()
                    if message is not None and _is_interrupt(message) and not self.later:
                        await self._interrupt(job, audio, heard, json.loads(message["text"]))
                        break
                    self.later.append(message)  # the next question, or the client's leaving: after this answer
                    if message is None:
                        break
                    next_message = asyncio.ensure_future(self.inbox.get())
                if next_event in done:
                    if (item := next_event.result()) is None:
                        break  # the answer is over
                    await self._stream(item, heard, audio, history)
                    next_event = asyncio.ensure_future(anext(events, None))
        finally:
            next_event.cancel()
            if not next_message.done():
                next_message.cancel()
            self._release()
        return await self._receive()

    async def _stream(self, item: tuple[dict[str, Any], Any], heard: _Heard, audio: Any, history: tuple) -> None:
        """One answer event to the client, noting what its text and audio have reached."""
        event, pcm = item
        if event["type"] == "done":
            event["context_turns"] = len(history)
            if self.conversation.add(audio, event["text"]):
                self.last = (event["id"], heard)
        elif event["type"] == "text":
            heard.text += event["delta"]
        await self._send(event)
        if pcm is not None:
            await self.ws.send_bytes(pcm.tobytes())
            heard.chunks.append((heard.samples + len(pcm), heard.text))  # this chunk speaks the text written so far
            heard.samples += len(pcm)
        if event["type"] == "done":
            log_done(event, len(audio) / SAMPLE_RATE)
        elif event["type"] == "error":
            self.on_error(event["kind"])

    async def _receive(self) -> Message | None:
        """The next message: one that arrived while an answer streamed, else the inbox's."""
        return self.later.popleft() if self.later else await self.inbox.get()

    async def _interrupt(self, job: Job, audio: Any, heard: _Heard, message: dict[str, Any]) -> None:
        """Stop the answer; the conversation keeps the text of what the client played, marked interrupted."""
        played, text = heard.cut(message.get("played"))
        self.worker.interrupt(job)
        self.conversation.add(audio, text, interrupted=True)
        await self._interrupted(job.id, played, text)

    async def _cut_last(self, message: dict[str, Any]) -> None:
        """An interrupt between questions: the last answer, finished but still being played, is cut where heard."""
        if self.last is None:
            raise ProtocolError("bad_message", "interrupt with no answer to stop: send it while an answer plays")
        (id_, heard), self.last = self.last, None
        played, text = heard.cut(message.get("played"))
        self.conversation.cut_last_answer(text)
        await self._interrupted(id_, played, text)

    async def _interrupted(self, id_: str, played: int, text: str) -> None:
        await self._send({"type": "interrupted", "id": id_, "played": played, "heard": text})
        logger.info("%s interrupted after %d samples: %r heard", id_, played, text)

    async def _fail(self, err: ProtocolError) -> None:
        self.on_error(err.kind)
        logger.info("%s error %s: %s", self.job.id if self.job else "-", err.kind, err)
        await self._send(err.event())

    async def _send(self, event: dict[str, Any]) -> None:
        await self.ws.send_json(event)


class _Heard:
    """What an answer has sent so far: its text, and after each audio chunk the samples and the text they speak."""

    def __init__(self) -> None:
        self.text = ""
        self.samples = 0
        self.chunks: list[tuple[int, str]] = []

    def cut(self, played: Any) -> tuple[int, str]:
        """The samples the client says it played (all sent, if it does not say) and the text they spoke."""
        played = self.samples if not isinstance(played, int) or played < 0 else min(played, self.samples)
        return played, next((text for end, text in reversed(self.chunks) if end <= played), "")


def _is_interrupt(message: Message) -> bool:
    if message.get("text") is None:
        return False
    try:
        return parse_text(message["text"])["type"] == "interrupt"
    except ProtocolError:
        return False


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
