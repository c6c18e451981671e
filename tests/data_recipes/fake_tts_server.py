"""A stand-in TTS HTTP endpoint for the builder's tests, standard library only.

POST JSON {"text", "voice", "rate"} -> a 22.05 kHz stereo wav, 0.25 s per word. Texts that make it
misbehave: "fail" (HTTP 500), "hang" (answers after 3 s), "junk" (bytes that are not audio).
GET /requests lists the JSON bodies received. Prints its port on the first line, then serves.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fake_tts import sine_wav  # noqa: E402

REQUESTS: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(200, json.dumps(REQUESTS).encode(), "application/json")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        REQUESTS.append(body)
        text = body["text"].strip()
        if text == "fail":
            self._answer(500, b"the engine fell over", "text/plain")
            return
        if text == "hang":
            time.sleep(3)
        audio = b"not audio at all" if text == "junk" else sine_wav(0.25 * len(text.split()), channels=2)
        self._answer(200, audio, "audio/wav")

    def _answer(self, status: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            pass

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
