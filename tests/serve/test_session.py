"""The WebSocket conversation in process (Starlette's test client, the scripted generator): timing rules."""

from __future__ import annotations

import json

import numpy as np
from starlette.testclient import TestClient

from omni.serve import session
from omni.serve.app import Settings, create_app
from tests.serve.conftest import Script

START = {"type": "start", "format": "f32", "chunk_size": 10, "sample_rate": 16000}
SPEECH = np.zeros(8000, "<f4").tobytes()


def client(**settings) -> TestClient:
    return TestClient(create_app(Script(), Settings(**settings)))


def events_until_end(ws) -> list[dict]:
    events = []
    while not events or events[-1]["type"] not in ("done", "error"):
        event = ws.receive_json()
        if event["type"] == "audio":
            ws.receive_bytes()
        events.append(event)
    return events


def test_a_question_without_end_times_out_and_frees_its_place(monkeypatch):
    monkeypatch.setattr(session, "QUESTION_GRACE_S", 0.2)
    with client(max_seconds=1.0) as http, http.websocket_connect("/v1/stream") as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "accepted"
        assert http.get("/health").json()["listening"] == 1
        error = ws.receive_json()
        assert error["kind"] == "timeout" and http.get("/health").json()["active"] == 0
        ws.send_json(START)  # a new start ends the skipping of the failed question
        ws.send_bytes(SPEECH)
        ws.send_json({"type": "end"})
        assert events_until_end(ws)[-1]["type"] == "done"


def test_questions_sent_back_to_back_are_answered_in_turn():
    with client() as http, http.websocket_connect("/v1/stream") as ws:
        for options in (START, START | {"chunk_size": -1}, START):  # the middle one is refused
            ws.send_text(json.dumps(options))
            ws.send_bytes(SPEECH)
            ws.send_text(json.dumps({"type": "end"}))
        answers = [events_until_end(ws) for _ in range(3)]
    assert [a[-1]["type"] for a in answers] == ["done", "error", "done"]
    assert answers[1][-1]["kind"] == "bad_message" and answers[0][0]["id"] != answers[2][0]["id"]


def test_each_connection_is_a_conversation_the_model_gets_with_each_question():
    script = Script()
    with TestClient(create_app(script, Settings(max_exchanges=1))) as http:
        with http.websocket_connect("/v1/stream") as ws:
            dones = []
            for _ in range(3):
                ws.send_json(START)
                ws.send_bytes(SPEECH)
                ws.send_json({"type": "end"})
                dones.append(events_until_end(ws)[-1])
            ws.send_json({"type": "reset"})
            assert ws.receive_json() == {"type": "reset"}
            ws.send_json(START)
            ws.send_bytes(SPEECH)
            ws.send_json({"type": "end"})
            dones.append(events_until_end(ws)[-1])
        with http.websocket_connect("/v1/stream") as other:  # another client: a conversation of its own
            other.send_json(START)
            other.send_bytes(SPEECH)
            other.send_json({"type": "end"})
            dones.append(events_until_end(other)[-1])
    assert [d["context_turns"] for d in dones] == [0, 2, 2, 0, 0]  # max_exchanges=1 keeps the last exchange
    second = script.histories[1][0]
    assert [t.role for t in second] == ["user", "assistant"] and second[1].text == dones[0]["text"]
    assert len(second[0].audio) == 8000 and script.histories[2][0][1].text == dones[1]["text"]


def ask(ws, options: dict = START) -> None:
    ws.send_json(options)
    ws.send_bytes(SPEECH)
    ws.send_json({"type": "end"})


def events_until(ws, kind: str) -> list[dict]:
    """Events up to the first of `kind` (audio events with their samples' length)."""
    events = []
    while not events or events[-1]["type"] != kind:
        event = ws.receive_json()
        if event["type"] == "audio":
            event["pcm"] = len(ws.receive_bytes())
        events.append(event)
    return events


def test_an_interrupt_stops_the_answer_and_the_next_question_gets_what_was_heard():
    script = Script(tokens=200, delay=0.01)  # 2 s of answer: the interrupt comes long before its end
    with TestClient(create_app(script, Settings())) as http, http.websocket_connect("/v1/stream") as ws:
        ask(ws)
        first = events_until(ws, "audio")
        assert [e["delta"] for e in first if e["type"] == "text"] == [" w0"]
        ws.send_json({"type": "interrupt", "played": 100})  # the client played the first chunk (100 samples)
        cut = events_until(ws, "interrupted")
        assert cut[-1] == {"type": "interrupted", "id": first[0]["id"], "played": 100, "heard": " w0"}
        assert all(e["type"] in ("text", "audio", "timing") for e in cut[:-1])  # what was under way when it arrived
        ask(ws)
        second = events_until_end(ws)  # no audio of the cut answer after "interrupted": the next question's
        assert second[0]["type"] == "accepted" and second[-1]["type"] == "done"
        assert second[-1]["context_turns"] == 2 and http.get("/health").json()["interrupted"] == 1
    answer = script.histories[1][0][1]
    assert (answer.role, answer.text, answer.interrupted) == ("assistant", " w0…", True)
    assert script.steps < 200 + 200  # the cut answer left the batch: it was not written to its end


def test_an_interrupt_after_the_answer_was_written_cuts_it_where_it_was_heard():
    script = Script(tokens=3)
    with TestClient(create_app(script, Settings())) as http, http.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "interrupt"})  # nothing to stop yet
        assert ws.receive_json()["kind"] == "bad_message"
        ask(ws)
        done = events_until_end(ws)[-1]
        assert done["text"] == " w0 w1 w2"
        ws.send_json({"type": "interrupt", "played": 250})  # still playing: two chunks and half of the third
        assert ws.receive_json() == {"type": "interrupted", "id": done["id"], "played": 250, "heard": " w0 w1"}
        ws.send_json({"type": "interrupt"})  # the same answer cannot be cut twice
        assert ws.receive_json()["kind"] == "bad_message"
        ask(ws)
        assert events_until_end(ws)[-1]["context_turns"] == 2
        assert http.get("/health").json()["interrupted"] == 0  # nothing was stopped in the batch
    answer = script.histories[1][0][1]
    assert (answer.text, answer.interrupted) == (" w0 w1…", True)
