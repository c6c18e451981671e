"""A minimal OpenAI-compatible chat server over a local transformers model.

So that data can be built through a local endpoint on this machine without installing vLLM: the builder's
`openai` backend talks to it exactly as it talks to vLLM, SGLang, llama.cpp, TGI or a hosted API.

    python -m data_recipes.builder.chat_server --model .cache/assets/smollm2-135m-instruct --port 8000
    curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": ".cache/assets/smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi!"}]}'

and in the builder's config: llm: {backend: openai, base_url: "http://127.0.0.1:8000/v1",
model: .cache/assets/smollm2-135m-instruct} (the model name is --served-model-name, by default --model).

Routes: POST /v1/chat/completions (non-streaming), GET /v1/models, GET /health. Requests that arrive within
a few milliseconds of each other (up to --max-batch) share one generate call, through the same path as the
builder's transformers backend, so concurrent clients are faster and greedy answers are the same. Handlers
wait on the event loop, not in a thread each: any number of requests can wait, `/health` answers at once
however many do, and a request whose client has gone (timed out, killed) is dropped before it is generated.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from data_recipes.builder.llm import Conversation, LLMBackendConfig, LLMError, TransformersChat
from omni.cli import command_parser
from omni.endpoint import completion

DISCONNECT_POLL_S = 0.5
"""how often a waiting request checks that its client is still there"""
BATCH_WAIT_S = 0.005
"""after a request arrives, how long to wait for others to share its generate call"""
DEFAULT_MAX_TOKENS = 512
"""answer length when a request sets neither max_tokens nor max_completion_tokens"""


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def plain(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": text}


class ChatRequest(BaseModel):
    """The chat-completions fields this server reads; others (top_p, stop, ...) are ignored."""

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    seed: int | None = None
    n: int = 1
    stream: bool = False


@dataclass
class Job:
    conversation: Conversation
    params: tuple[int, float, int | None]
    """max_new_tokens, temperature, seed: requests share a generate call only when these agree"""
    future: Future = field(default_factory=Future)


class Batcher:
    """One worker thread owns the model and answers the requests that arrived together in one call."""

    def __init__(self, chat: TransformersChat, max_batch: int, wait_s: float = BATCH_WAIT_S):
        self.chat, self.max_batch, self.wait_s = chat, max_batch, wait_s
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0, "dropped": 0, "waiting": 0}
        self.thread = threading.Thread(target=self._run, name="generate", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join()

    def submit(self, conversation: Conversation, max_new_tokens: int, temperature: float, seed: int | None) -> Job:
        """Queue a request; its `future` holds the answer. Cancelling the future before its batch starts drops it."""
        job = Job(conversation, (max_new_tokens, temperature, seed if temperature > 0 else None))
        self.jobs.put(job)
        return job

    def _run(self) -> None:
        while (first := self.jobs.get()) is not None:
            jobs, deadline = [first], time.monotonic() + self.wait_s
            while len(jobs) < self.max_batch:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)  # answer what was collected, then stop
                    break
                jobs.append(job)
            self.stats["waiting"] = self.jobs.qsize()
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # False: its client left
            self.stats["dropped"] += len(jobs) - len(live)
            jobs = live
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.params, []).append(job)
            for params, group in groups.items():
                results = self.chat.complete([j.conversation for j in group], *params)
                for job, result in zip(group, results, strict=True):
                    job.future.set_result(result)
                self.stats["batches"] += 1
                self.stats["largest_batch"] = max(self.stats["largest_batch"], len(group))
            self.stats["requests"] += len(jobs)


def error(status: int, message: str) -> JSONResponse:
    """OpenAI's error shape, which clients (the official one included) read the message from."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status)


def make_app(chat: TransformersChat, model_name: str, max_batch: int) -> FastAPI:
    batcher = Batcher(chat, max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="omni chat server", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in err.errors())
        return error(400, problems or "invalid request")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, **batcher.stats}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "omni"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest, connection: Request):
        if request.model != model_name:
            return error(404, f"model {request.model!r} is not served here; this server serves {model_name!r}")
        if request.stream or request.n != 1:
            return error(400, "only non-streaming requests with n = 1 are supported")
        max_tokens = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS
        conversation = [m.plain() for m in request.messages]
        job = batcher.submit(conversation, max_tokens, request.temperature, request.seed)
        answer = asyncio.wrap_future(job.future)
        while not (await asyncio.wait({answer}, timeout=DISCONNECT_POLL_S))[0]:
            if await connection.is_disconnected():
                job.future.cancel()  # dropped unless its batch has started
                return error(499, "the client closed the connection")
        result = answer.result()
        if isinstance(result, LLMError):
            return error(500, result.reason)
        return completion(model_name, result.text, result.stopped, result.prompt_tokens, result.completion_tokens)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--model", required=True, help="local model directory or hub name")
    parser.add_argument("--served-model-name", help="the name clients ask for (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--max-batch", type=int, default=16, help="most requests in one generate call")
    args = parser.parse_args(argv)
    if args.max_batch < 1:
        parser.error(f"--max-batch must be at least 1, got {args.max_batch}")

    import uvicorn

    config = LLMBackendConfig(backend="transformers", model=args.model, dtype=args.dtype, batch_size=args.max_batch)
    app = make_app(TransformersChat(config), args.served_model_name or args.model, args.max_batch)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
