"""A deterministic OpenAI-compatible chat endpoint for builder tests: it answers "You asked <instruction>."
(in a dialogue "... after <the first question>."; asked for a follow-up, "And why is that, after N questions?")

    python tests/data_recipes/echo_chat_server.py --port 8123 [--delay 0.05]

    python tests/data_recipes/echo_chat_server.py --port 8123 --capacity 2 --served served.txt

A user turn containing "LIST" gets code (unspeakable, also when asked to rewrite it for speech), "TABLE" a
table (which the rewrite for speech makes a sentence), "BROKEN" a server error. Each request waits `--delay`
seconds, so a test can kill a build while it is still asking; `--capacity N` serves at most N at once (the
others wait, as on a loaded server), drops a waiting request whose client has gone, and `--served` appends
each answered question to a file, so a test can count what was answered twice.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request

from omni.endpoint import completion


def create_app(delay: float, capacity: int, served: Path | None) -> FastAPI:
    app = FastAPI()
    serving = asyncio.Semaphore(capacity)

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.post("/v1/chat/completions")
    async def complete(body: dict, request: Request) -> dict:
        question = body["messages"][-1]["content"]
        async with serving:
            if await request.is_disconnected():
                raise HTTPException(499, "the client has gone")
            await asyncio.sleep(delay)
            if served is not None:
                with served.open("a") as log:
                    log.write(question.replace("\n", " ") + "\n")
        if "BROKEN" in question:
            raise HTTPException(500, "broken on purpose")
        words = re.sub(r"[^A-Za-z0-9 ]", "", question).lower()
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        answer = "```\nfruits = ['apple', 'pear']\n```" if "LIST" in question else f"You asked {words}."
        if "TABLE" in question:
            answer = "| planet | moons |\n|---|---|\n| Mars | 2 |"
            if "read aloud" in system:  # the builder's rewrite for speech
                answer = "Mars has two moons."
        elif "follow-up" in system:  # the builder's follow-up writer: the dialogue is in the user turn
            answer = f"And why is that, after {question.count('User:')} questions?"
        elif len(users) > 1:  # a later turn of a dialogue: say what came first
            first = re.sub(r"[^A-Za-z0-9 ]", "", users[0]).lower()
            answer = f"You asked {words} after {first}."
        return completion(body.get("model", "echo"), answer)

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=1000)
    parser.add_argument("--served", type=Path, default=None)
    args = parser.parse_args()
    app = create_app(args.delay, args.capacity, args.served)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
