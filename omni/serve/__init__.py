"""`omni serve`: a streaming voice server and its web page.

- app.py       the FastAPI app (`create_app`), its HTTP routes and the `omni serve` command
- session.py   one WebSocket conversation: questions in, streamed answers out
- protocol.py  the messages, written down once, and their error kinds
- question.py  a question's audio as it arrives, checked against the limits
- worker.py    the thread that owns the model: bounded places, a queue, batches
- answer.py    one answer's generator events as protocol events (resampled audio, timings)
- client.py    Python clients: `ask` (HTTP), `ask_ws` / `stream` (WebSocket)
- launch.py    `omni serve` in a child process, for tests and scripts
- static/      the page: plain HTML and JS, no build step, nothing fetched from elsewhere
"""
