"""A deterministic OpenAI-compatible chat endpoint for builder tests: it answers "You asked <instruction>."
(in a dialogue "... after <the first question>."; asked for a follow-up, "And why is that, after N questions?")

    python tests/data_recipes/echo_chat_server.py --port 8123 [--delay 0.05]

A user turn containing "LIST" gets a list (unspeakable), "BROKEN" a server error. Each request waits
`--delay` seconds, so a test can kill a build while it is still asking.
"""

from __future__ import annotations

import argparse
import re
import time

import uvicorn
from fastapi import FastAPI, HTTPException


def create_app(delay: float) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/v1/chat/completions")
    def complete(body: dict) -> dict:
        time.sleep(delay)
        question = body["messages"][-1]["content"]
        if "BROKEN" in question:
            raise HTTPException(500, "broken on purpose")
        words = re.sub(r"[^A-Za-z0-9 ]", "", question).lower()
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        answer = "1. one\n2. two" if "LIST" in question else f"You asked {words}."
        if "follow-up" in system:  # the builder's follow-up writer: the dialogue is in the user turn
            answer = f"And why is that, after {question.count('User:')} questions?"
        elif len(users) > 1:  # a later turn of a dialogue: say what came first
            first = re.sub(r"[^A-Za-z0-9 ]", "", users[0]).lower()
            answer = f"You asked {words} after {first}."
        return {
            "id": "echo",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "echo"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(create_app(args.delay), host="127.0.0.1", port=args.port, log_level="warning")
