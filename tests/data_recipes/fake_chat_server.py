"""A chat-completions endpoint that misbehaves on request, for the builder's HTTP backend tests.

    python tests/data_recipes/fake_chat_server.py LOG    # prints its port, then serves on 127.0.0.1

The request's model name picks the behaviour:
    ok                     answers "echo: <last user message>"
    status-<code>-<n>-<tag> the first n requests with this exact name answer HTTP <code>, then ok
                           (429 comes with Retry-After: 1)
    sleep-<seconds>        waits, then ok
    garbage                200 with a body that is not JSON
    empty                  200 with empty content
    nochoices              200 with JSON that has no choices
    echo-key               401 whose message repeats the Authorization header it got
In every mode a last user message containing FAIL answers 500. Each request is logged to LOG as a JSON
line {"t": unix time, "model", "status", "authorization"} so that tests can see retries and their spacing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

calls: Counter[str] = Counter()
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model, prompt = request["model"], request["messages"][-1]["content"]
        with lock:
            calls[model] += "FAIL" not in prompt
            n = calls[model]
        mode, *args = model.split("-")
        status, body, headers = 200, answer(f"echo: {prompt}"), {}
        if "FAIL" in prompt:
            status, body = 500, {"error": {"message": "marker word"}}
        elif mode == "status" and n <= int(args[1]):
            status, body = int(args[0]), {"error": {"message": f"planned {args[0]}"}}
            headers = {"Retry-After": "1"} if status == 429 else {}
        elif mode == "sleep":
            time.sleep(float(args[0]))
        elif mode == "garbage":
            body = "<html>this is not JSON"
        elif mode == "empty":
            body = answer("")
        elif mode == "nochoices":
            body = {"id": "x", "object": "chat.completion"}
        elif model == "echo-key":
            status, body = 401, {"error": {"message": f"bad key: {self.headers.get('Authorization')}"}}
        self.log(model, status)
        self.reply(status, body, headers)

    def log(self, model: str, status: int) -> None:
        line = {"t": time.time(), "model": model, "status": status, "authorization": self.headers.get("Authorization")}
        with lock, open(sys.argv[1], "a") as f:
            f.write(json.dumps(line) + "\n")

    def reply(self, status: int, body: dict | str, headers: dict[str, str]) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass

    def log_message(self, format: str, *args) -> None:  # quiet: the JSON log is the record
        pass


def answer(content: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
