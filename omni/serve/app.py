"""`omni serve`: talk to a model: a WebSocket stream, an HTTP endpoint for scripts and a page with the microphone.

    omni serve                                   # the demo's models (make demo) on http://127.0.0.1:8000
    omni serve --model M --decoder D --vocoder V --device cuda --host 0.0.0.0 --port 8000
    omni serve --tiny                            # tiny random models: gibberish, but the whole path, no training

Open http://127.0.0.1:8000 and hold the button to talk. The protocol is in `omni/serve/protocol.py`;
`omni.serve.client.ask` is the Python client. Browsers give the microphone to http://127.0.0.1 and
http://localhost only (or https): from another machine, tunnel the port (ssh -L 8000:127.0.0.1:8000).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from omni.audio import SAMPLE_RATE
from omni.cli import FIRST_CHUNK_HELP, command_parser
from omni.config import DEMO_PARTS
from omni.serve.protocol import HTTP_STATUS, ProtocolError, parse_start
from omni.serve.question import Question
from omni.serve.session import ClientSession, log_done
from omni.serve.worker import Job, Worker, warm_up

STATIC = Path(__file__).parent / "static"
logger = logging.getLogger("omni.serve")


@dataclass
class Settings:
    max_queue: int = 16  # questions held at once (spoken, waiting or answered); more are told "busy"
    max_batch: int = 8  # questions answered in one batch
    batch_window: float = 0.02  # seconds a question waits for others to batch with
    max_seconds: float = 30.0  # longest question
    max_message_bytes: int = 8 << 20  # largest message (a whole file); the transport closes at 4x
    max_new_tokens: int = 256  # longest answer, in text tokens
    max_exchanges: int = 8  # earlier questions and answers of its connection a question is answered with


def create_app(generator: Any, settings: Settings) -> FastAPI:
    """The server around a `SpeechGenerator` (or anything with its `batch` and `vocoder.sample_rate`)."""
    worker = Worker(generator, settings.max_queue, settings.max_batch, settings.batch_window, settings.max_new_tokens)
    errors: Counter[str] = Counter()

    def count_error(kind: str) -> None:
        errors[kind] += 1

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="omni", lifespan=lifespan)
    app.state.worker = worker
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Alive, with the places and counters: held (active), by state, served, cancelled, errors by kind."""
        return {"status": "ok", **worker.status(), "errors": dict(errors)}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """200 while the model's thread takes questions (it starts warmed up), 503 otherwise."""
        return JSONResponse({"ready": worker.alive()}, status_code=200 if worker.alive() else 503)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        await ClientSession(
            ws, worker, settings.max_seconds, settings.max_message_bytes, count_error, settings.max_exchanges
        ).run()

    @app.post("/v1/answer")
    async def answer(request: Request) -> Response:
        """The question as the body (an encoded file); the answer whole (JSON with a wav) or streamed (NDJSON)."""
        job = None
        try:
            params = dict(request.query_params)
            streamed = params.pop("stream", "false").lower() in ("1", "true", "yes")
            start = parse_start({**params, "format": "file"})
            job = worker.reserve()
            question = Question("file", settings.max_seconds, settings.max_message_bytes)
            question.add(await read_body(request, settings.max_message_bytes))
            audio = question.audio()
            worker.submit(job, audio, start.chunk_size, start.sample_rate)
        except ProtocolError as err:
            if job is not None:
                job.close()
            count_error(err.kind)
            logger.info("%s error %s: %s", job.id if job else "-", err.kind, err)
            return JSONResponse(err.event(), status_code=HTTP_STATUS.get(err.kind, 400))
        seconds = len(audio) / SAMPLE_RATE
        if streamed:
            return StreamingResponse(ndjson(job, seconds, count_error), media_type="application/x-ndjson")
        return await whole(job, seconds, request, count_error)

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is over `limit` bytes."""
    if int(request.headers.get("content-length") or 0) > limit:
        raise ProtocolError("too_large", f"body over the limit of {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ProtocolError("too_large", f"body over the limit of {limit} bytes")
    return bytes(data)


async def ndjson(job: Job, seconds: float, count_error: Callable[[str], None]) -> AsyncIterator[bytes]:
    """The answer's events, one JSON object a line; audio samples inline as base64 float32."""
    try:
        async for event, pcm in job.events():
            note(event, seconds, count_error)
            if pcm is not None:
                event = {**event, "pcm": base64.b64encode(pcm.tobytes()).decode()}
            yield (json.dumps(event) + "\n").encode()
    finally:
        job.close()  # also when the client leaves mid-answer (the response is cancelled)


async def whole(job: Job, seconds: float, request: Request, count_error: Callable[[str], None]) -> JSONResponse:
    """The done event plus the whole answer as a base64 float32 WAV; the job is cancelled if the client leaves."""
    watcher = asyncio.create_task(close_on_disconnect(request, job))
    pieces: list[np.ndarray] = []
    try:
        async for event, pcm in job.events():
            note(event, seconds, count_error)
            if pcm is not None:
                pieces.append(pcm)
            if event["type"] == "error":
                return JSONResponse(event, status_code=HTTP_STATUS.get(event["kind"], 400))
            if event["type"] == "done":
                wav = io.BytesIO()
                audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
                soundfile.write(wav, audio, event["sample_rate"], subtype="FLOAT", format="WAV")
                return JSONResponse({**event, "wav": base64.b64encode(wav.getvalue()).decode()})
        return JSONResponse({"type": "error", "kind": "internal", "message": "cancelled"}, status_code=500)
    finally:
        watcher.cancel()
        job.close()


async def close_on_disconnect(request: Request, job: Job) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.close()


def note(event: dict[str, Any], seconds: float, count_error: Callable[[str], None]) -> None:
    """Logs a finished answer, counts a failed one."""
    if event["type"] == "done":
        log_done(event, seconds)
    elif event["type"] == "error":
        count_error(event["kind"])


def load_generator(
    model: Path,
    decoder: Path,
    vocoder: Path,
    device: str,
    first_chunk: int | None = None,
    vocoder_process: bool = False,
) -> Any:
    """The three trained parts on `device`, as `omni generate` loads them."""
    for flag, path in (("--model", model), ("--decoder", decoder), ("--vocoder", vocoder)):
        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"{flag} {path}: no such model directory (make demo trains the demo's; --tiny serves random ones)"
            )
    from omni.speech_generator import SpeechGenerator, load_parts

    parts = load_parts(Path(model), Path(decoder), Path(vocoder), device)
    return SpeechGenerator(*parts, first_chunk=first_chunk, vocoder_process=vocoder_process)


def main(argv: list[str] | None = None) -> None:
    import torch
    import uvicorn

    defaults = Settings()
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, default=DEMO_PARTS[0], help="stage-1 model")
    parser.add_argument("--decoder", type=Path, default=DEMO_PARTS[1], help="speech decoder")
    parser.add_argument("--vocoder", type=Path, default=DEMO_PARTS[2], help="unit vocoder")
    tiny = "serve tiny random models, written to this folder (default .cache/tiny_serve)"
    parser.add_argument("--tiny", type=Path, nargs="?", const=Path(".cache/tiny_serve"), default=None, help=tiny)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue, help="questions held at once")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch, help="questions per batch")
    parser.add_argument("--batch-window-ms", type=float, default=1000 * defaults.batch_window)
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds, help="longest question")
    parser.add_argument("--max-message-bytes", type=int, default=defaults.max_message_bytes)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, help="longest answer")
    parser.add_argument("--first-chunk", type=int, default=0, help=FIRST_CHUNK_HELP)
    exchanges = "earlier exchanges of its connection each question is answered with (0: none)"
    parser.add_argument("--max-exchanges", type=int, default=defaults.max_exchanges, help=exchanges)
    beside = "vocode in a process of its own, on a core of its own (auto: on a CPU with more than one core)"
    parser.add_argument("--vocoder-process", choices=["auto", "on", "off"], default="auto", help=beside)
    args = parser.parse_args(argv)
    settings = Settings(
        args.max_queue,
        args.max_batch,
        args.batch_window_ms / 1000,
        args.max_seconds,
        args.max_message_bytes,
        args.max_new_tokens,
        args.max_exchanges,
    )
    if args.tiny:
        from omni.tiny import write_tiny_models

        args.model, args.decoder, args.vocoder = write_tiny_models(args.tiny).values()
    cpu, cores = torch.device(args.device).type == "cpu", os.cpu_count() or 1
    beside = args.vocoder_process == "on" or (args.vocoder_process == "auto" and cpu and cores > 1)
    if beside and cpu:  # the token steps leave the vocoder's core to it
        torch.set_num_threads(max(1, torch.get_num_threads() - 1))
    parts = (args.model, args.decoder, args.vocoder, args.device, args.first_chunk or None, beside)
    generator = load_generator(*parts)
    listener = socket.create_server((args.host, args.port))  # a taken port fails here, as one error line
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    vocoding = "in a process of its own" if beside else "with the token steps"
    logger.info("models loaded on %s, vocoding %s; warmed up in %.1f s", args.device, vocoding, warm_up(generator))
    logger.info("http://%s:%d (page, /health, /ready, POST /v1/answer; WebSocket /v1/stream)", args.host, args.port)
    config = uvicorn.Config(
        create_app(generator, settings), ws_max_size=4 * settings.max_message_bytes, log_level="info"
    )
    uvicorn.Server(config).run(sockets=[listener])
