"""The real server on loopback: streamed answers, bad input, a full server, clients that leave, the command."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time

import httpx
import numpy as np
import psutil
import pytest
import websockets

from omni.audio import load_audio
from omni.serve.client import ServeError, ask, ask_ws, read_events, ws_url
from omni.serve.launch import free_port
from tests.questions import bad_questions
from tests.serve.conftest import MAX_MESSAGE_BYTES, MAX_QUEUE, MAX_SECONDS, WAV, health, wait_until

START = {"type": "start", "format": "f32", "chunk_size": 5, "sample_rate": 16000}
END = json.dumps({"type": "end"})


async def question(ws, audio: np.ndarray, **options) -> list[dict]:
    """One question on an open connection, sent as a microphone sends it (100 ms frames); its events."""
    await ws.send(json.dumps(START | options))
    for i in range(0, len(audio), 1600):
        await ws.send(audio[i : i + 1600].astype("<f4").tobytes())
    await ws.send(END)
    return await answer(ws)


async def answer(ws) -> list[dict]:
    events = []
    async for event in read_events(ws):
        events.append(event)
        if event["type"] in ("done", "error"):
            return events
    raise AssertionError(f"connection closed after {events}")


def check_answer(events: list[dict], sample_rate: int) -> np.ndarray:
    """The protocol's order and bookkeeping; returns the joined audio."""
    kinds = [e["type"] if e["type"] != "timing" else e["name"] for e in events]
    assert kinds[0] == "accepted" and kinds[1] == "prefill" and kinds[-1] == "done", kinds
    assert set(kinds[2:-1]) == {"text", "audio", "first_packet"}, kinds
    first_audio = kinds.index("audio")
    assert kinds[first_audio + 1] == "first_packet" and kinds.count("first_packet") == 1
    audio = [e for e in events if e["type"] == "audio"]
    assert [e["seq"] for e in audio] == list(range(len(audio))) and len(audio) >= 2
    assert all(len(e["pcm"]) == e["samples"] and e["sample_rate"] == sample_rate for e in audio)
    done = events[-1]
    assert done["text"] and "".join(e["delta"] for e in events if e["type"] == "text") == done["text"]
    joined = np.concatenate([e["pcm"] for e in audio])
    assert done["samples"] == len(joined) and done["sample_rate"] == sample_rate
    assert done["audio_seconds"] == pytest.approx(len(joined) / sample_rate, abs=1e-3)
    assert 0 < done["first_packet_ms"] <= done["total_ms"] and done["id"] == events[0]["id"]
    return joined


def test_a_spoken_question_streams_text_and_audio_that_join_to_the_answer(server):
    audio = load_audio(WAV)

    async def talk():
        async with websockets.connect(ws_url(server.url)) as ws:
            first = await question(ws, audio)
            await ws.send(json.dumps({"type": "reset"}))  # a new conversation: answered as if alone
            assert json.loads(await ws.recv()) == {"type": "reset"}
            return first, await question(ws, audio, sample_rate=24000, chunk_size=0)

    events, offline = asyncio.run(talk())
    joined = check_answer(events, 16000)
    whole = ask(server.url, WAV, chunk_size=5)  # the HTTP endpoint's whole answer, as a WAV
    assert whole.text == events[-1]["text"] and whole.sample_rate == 16000
    np.testing.assert_array_equal(whole.audio, joined)
    # the same connection asked again: offline (Omega 0: one chunk, and the resampler's last samples) at 24 kHz
    assert offline[-1]["text"] == whole.text and offline[-1]["sample_rate"] == 24000
    assert len([e for e in offline if e["type"] == "audio"]) <= 2
    at_16k = ask(server.url, WAV, chunk_size=0).audio
    assert offline[-1]["samples"] == pytest.approx(1.5 * len(at_16k), abs=2)


def test_a_connection_is_a_conversation_answered_in_the_context_of_its_earlier_turns(server):
    audio = load_audio(WAV)

    async def talk():
        async with websockets.connect(ws_url(server.url)) as ws:
            return [(await question(ws, audio))[-1] for _ in range(3)]

    first, second, third = asyncio.run(talk())
    assert [d["context_turns"] for d in (first, second, third)] == [0, 2, 4]
    alone = ask(server.url, WAV, chunk_size=5)  # HTTP: no conversation
    assert alone.text == first["text"] and "context_turns" not in alone.done
    assert second["text"] != first["text"]  # the same question, asked again after an answer, reads differently


def test_an_interrupt_after_the_first_chunk_stops_the_audio_and_the_next_answer_knows_it(server):
    audio = load_audio(WAV)

    async def talk():
        async with websockets.connect(ws_url(server.url)) as ws:
            await ws.send(json.dumps(START))
            await ws.send(audio.astype("<f4").tobytes())
            await ws.send(END)
            before, after = [], []
            async for event in read_events(ws):
                (after if any(e["type"] == "audio" for e in before) else before).append(event)
                if event["type"] == "audio" and not after:
                    await ws.send(json.dumps({"type": "interrupt", "played": len(event["pcm"])}))
                if event["type"] == "interrupted":
                    break
            return before, after, await question(ws, audio)

    before, after, following = asyncio.run(talk())
    interrupted = after[-1]
    assert interrupted["type"] == "interrupted" and interrupted["id"] == before[0]["id"]
    heard = "".join(e["delta"] for e in before if e["type"] == "text")
    assert interrupted["played"] == before[-1]["samples"] and interrupted["heard"] == heard
    assert following[0]["type"] == "accepted" and following[-1]["type"] == "done"  # no audio of the cut answer
    assert following[-1]["context_turns"] == 2
    alone = ask(server.url, WAV, chunk_size=5).text
    assert following[-1]["text"] != alone  # answered after the cut answer, not as if alone


def test_http_streams_the_same_events_as_ndjson(server):
    response = httpx.post(f"{server.url}/v1/answer?stream=true&chunk_size=5", content=WAV.read_bytes(), timeout=120)
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    events = [json.loads(line) for line in response.text.splitlines()]
    for event in events:
        if event["type"] == "audio":
            event["pcm"] = np.frombuffer(base64.b64decode(event.pop("pcm")), "<f4")
    joined = check_answer([{"type": "accepted", "id": events[-1]["id"]}, *events], 16000)
    np.testing.assert_array_equal(ask_ws(server.url, WAV, chunk_size=5).audio, joined)


def noise(seconds: float) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000))).astype("<f4")


BAD = {  # kind -> messages of a bad question
    "empty_audio": [START, END],
    "invalid_audio": [START, np.full(1600, np.nan, "<f4").tobytes(), END],
    "not_audio": [START | {"format": "file"}, b"this is not a wav file " * 100, END],
    "too_long": [START, *[noise(1.0).tobytes() for _ in range(int(MAX_SECONDS) + 2)], END],
    "too_short": [START, noise(0.1).tobytes(), END],
    "too_large": [START | {"format": "file"}, b"\0" * (MAX_MESSAGE_BYTES + 1), END],
    "bad_message": ["{not json"],
    "bad_option": [START | {"chunk_size": -1}, noise(1.0).tobytes(), END],
    "unknown_type": [{"type": "hello"}],
    "odd_bytes": [START | {"format": "s16"}, b"\1\2\3", END],
}
EXPECTED = {"bad_option": "bad_message", "unknown_type": "bad_message", "odd_bytes": "not_audio"}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_an_error_event_and_the_server_goes_on(server, case):
    errors_before = health(server)["errors"]
    kind = EXPECTED.get(case, case)
    good = load_audio(WAV)

    async def talk():
        async with websockets.connect(ws_url(server.url)) as ws:
            for message in BAD[case]:
                await ws.send(json.dumps(message) if isinstance(message, dict) else message)
            error = next(e for e in await answer(ws) if e["type"] != "accepted")
            return error, await question(ws, good)  # the same connection goes on

    error, after = asyncio.run(talk())
    assert error["type"] == "error" and error["kind"] == kind and error["message"]
    assert after[-1]["type"] == "done"
    assert ask_ws(server.url, WAV).text == after[-1]["text"]  # and so does everyone else
    assert health(server)["errors"].get(kind, 0) == errors_before.get(kind, 0) + 1


@pytest.mark.parametrize(
    ("body", "kind", "status"),
    [
        (b"", "empty_audio", 400),
        (b"RIFF but not a wav", "not_audio", 400),
        (b"\0" * (MAX_MESSAGE_BYTES + 1), "too_large", 413),
    ],
)
def test_http_bad_input_gets_an_error_body(server, body, kind, status):
    response = httpx.post(f"{server.url}/v1/answer", content=body, timeout=60)
    assert response.status_code == status and response.json()["kind"] == kind
    with pytest.raises(ServeError, match="bad_message"):
        ask(server.url, WAV, chunk_size=-1)
    assert ask(server.url, WAV).text


@pytest.mark.parametrize("case", list(bad_questions(MAX_SECONDS)))
def test_http_refuses_a_bad_question_file_as_omni_generate_does(server, case):
    body, kind, message = bad_questions(MAX_SECONDS)[case]
    response = httpx.post(f"{server.url}/v1/answer", content=body, timeout=60)
    assert response.status_code == 400 and response.json() == {"type": "error", "kind": kind, "message": message}


def test_a_message_over_the_transport_limit_closes_only_its_connection(server):
    async def talk():
        async with websockets.connect(ws_url(server.url), max_size=None) as ws:
            await ws.send(json.dumps(START))
            await ws.send(b"\0" * (4 * MAX_MESSAGE_BYTES + 8))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(talk()) == 1009  # message too big
    wait_until(lambda: health(server)["active"] == 0)
    assert ask_ws(server.url, WAV).text


def test_a_full_server_says_busy_at_once_and_frees_places(server):
    async def talk():
        holders = [await websockets.connect(ws_url(server.url)) for _ in range(MAX_QUEUE)]
        for ws in holders:
            await ws.send(json.dumps(START))
            assert json.loads(await ws.recv())["type"] == "accepted"
        status = health(server)
        async with websockets.connect(ws_url(server.url)) as extra:
            began = time.monotonic()
            await extra.send(json.dumps(START))
            busy = json.loads(await extra.recv())
            waited = time.monotonic() - began
        http = httpx.post(f"{server.url}/v1/answer", content=WAV.read_bytes(), timeout=30)
        for ws in holders:
            await ws.close()
        return status, busy, waited, http

    status, busy, waited, http = asyncio.run(talk())
    assert status["active"] == status["listening"] == MAX_QUEUE
    assert busy["type"] == "error" and busy["kind"] == "busy" and waited < 5
    assert http.status_code == 503 and http.json()["kind"] == "busy"
    wait_until(lambda: health(server)["active"] == 0)
    assert ask_ws(server.url, WAV).text


@pytest.mark.parametrize("via", ["websocket", "http"])
def test_a_client_leaving_mid_answer_frees_its_place_at_once(server, via):
    before = health(server)

    async def leave_after_the_first_event():
        async with websockets.connect(ws_url(server.url)) as ws:
            await ws.send(json.dumps(START))
            await ws.send(load_audio(WAV).astype("<f4").tobytes())
            await ws.send(END)
            async for event in read_events(ws):
                if event["type"] == "timing":  # prefill: the answer has begun
                    return

    if via == "websocket":
        asyncio.run(leave_after_the_first_event())
    else:
        url = f"{server.url}/v1/answer?stream=true"
        with httpx.stream("POST", url, content=WAV.read_bytes(), timeout=60) as response:
            assert json.loads(next(response.iter_lines()))["name"] == "prefill"
    wait_until(lambda: health(server)["cancelled"] == before["cancelled"] + 1, timeout=5)
    after = health(server)
    assert after["active"] == 0 and after["served"] == before["served"]
    assert ask_ws(server.url, WAV).text


def test_health_readiness_page_and_log_line(server):
    assert httpx.get(f"{server.url}/ready").json() == {"ready": True}
    status = health(server)
    assert status["status"] == "ok" and status["max_queue"] == MAX_QUEUE and status["served"] >= 1
    page = httpx.get(f"{server.url}/").text
    assert 'id="talk"' in page and "/static/app.js" in page
    for name in ("app.js", "capture.js"):
        script = httpx.get(f"{server.url}/static/{name}")
        assert script.status_code == 200 and "http://" not in script.text and "https://" not in script.text
    assert "http://" not in page and "https://" not in page  # nothing is fetched from elsewhere
    ask(server.url, WAV)
    assert " done: question 3.0 s, first packet " in server.log_text()


def test_a_killed_vocoder_process_is_started_again_and_the_next_answer_comes(server):
    """The server vocodes in a process of its own (`--vocoder-process on`); killed between answers, the next
    question starts another and is answered in full."""

    def vocoders() -> list[psutil.Process]:
        children = psutil.Process(server.process.pid).children()
        return [p for p in children if "omni.vocoder.process" in p.cmdline()]

    [vocoder] = vocoders()
    vocoder.kill()
    wait_until(lambda: not vocoder.is_running() or vocoder.status() == psutil.STATUS_ZOMBIE)
    answer = ask(server.url, WAV, chunk_size=5)
    assert answer.text and len(answer.audio) > 1600
    [again] = vocoders()
    assert again.pid != vocoder.pid
    assert "vocoding in a process of its own" in server.log_text()


def test_a_missing_model_is_one_error_line(tmp_path):
    result = subprocess.run(  # `omni serve`; the server fixture runs `python -m omni.serve`
        [sys.executable, "-m", "omni.cli", "serve", "--model", str(tmp_path / "none"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: --model {tmp_path / 'none'}: no such model directory (make demo trains the demo's; --tiny serves "
        "random ones) (--debug shows the traceback)"
    ]
