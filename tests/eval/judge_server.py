"""A judge endpoint for tests, as a real process: it scores by the known answers (a right one 5, a wrong one 1,
anything else 3; style 5 unless the answer has digits or lines), or the other way round with --contrary.

    python tests/eval/judge_server.py --port 8124 [--contrary]
"""

from __future__ import annotations

import argparse
import json
import re

import uvicorn
from fastapi import FastAPI

from omni.endpoint import completion
from omni.eval.judge import KNOWN

RIGHT = {right for _, right, _ in KNOWN}
WRONG = {wrong for _, _, wrong in KNOWN}


def create_app(contrary: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": "judge", "object": "model", "created": 0, "owned_by": "test"}]}

    @app.post("/v1/chat/completions")
    def complete(body: dict) -> dict:
        answer = body["messages"][-1]["content"].split("Answer: ", 1)[1]
        content = 5 if answer in RIGHT else 1 if answer in WRONG else 3
        if contrary:
            content = 6 - content
        style = 2 if re.search(r"\d|\n", answer) else 5
        reply = json.dumps({"content": content, "style": style})
        return completion(body["model"], reply)

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--contrary", action="store_true")
    args = parser.parse_args()
    uvicorn.run(create_app(args.contrary), host="127.0.0.1", port=args.port, log_level="warning")
