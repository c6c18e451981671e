"""The builder's chat backends: local transformers, the OpenAI-compatible client against the real local
chat server and against a misbehaving one, and the API key's secrecy. Servers run as processes on loopback."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import uvicorn
from transformers import AutoTokenizer

from data_recipes.builder.chat_server import make_app
from data_recipes.builder.llm import LLMBackendConfig, LLMError, OpenAIChat, TransformersChat, make_backend
from omni import endpoint
from omni.chat import Completion
from omni.config import ConfigError, from_dict
from omni.serve.launch import free_port
from tests.conftest import scaled_tiny_llm

ROOT = Path(__file__).resolve().parents[2]
FAKE_SERVER = Path(__file__).with_name("fake_chat_server.py")
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = [
    [{"role": "user", "content": "hello"}],
    [SYSTEM, {"role": "user", "content": "What is the answer to one two three four five six seven?"}],
    [{"role": "user", "content": "yes no maybe"}],
    [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "world"},
        {"role": "user", "content": "no"},
    ],
    [SYSTEM, {"role": "user", "content": "The quick brown fox jumps over the lazy dog."}],
]
SECRET = "sk-test-0123456789abcdefSECRET"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def llm_dir(tiny_dir, tmp_path_factory) -> Path:
    """The tiny random Llama with its layers' matrices scaled up (as in tests/test_chat.py: otherwise every
    answer repeats the prompt's last token), saved so that the server process loads the same model."""
    llm = scaled_tiny_llm(tiny_dir)
    directory = tmp_path_factory.mktemp("scaled") / "llm"
    llm.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_dir / "llm").save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def local(llm_dir) -> TransformersChat:
    backend = make_backend(LLMBackendConfig(model=str(llm_dir), batch_size=8, max_new_tokens=8))
    assert isinstance(backend, TransformersChat)
    return backend


def test_config_is_checked():
    assert LLMBackendConfig().backend == "transformers"
    with pytest.raises(ConfigError, match="base_url: required"):
        LLMBackendConfig(backend="openai")
    with pytest.raises(ConfigError, match="concurrency"):
        from_dict(LLMBackendConfig, {"concurrency": 0})
    with pytest.raises(ConfigError, match="max_retries"):
        LLMBackendConfig(max_retries=-1)
    with pytest.raises(ConfigError, match="expected one of"):
        from_dict(LLMBackendConfig, {"backend": "vllm"})


# 1. the local transformers backend


def test_transformers_batch_equals_one_by_one(local, monkeypatch):
    together = local.chat(CONVERSATIONS)
    alone = [local.chat([c])[0] for c in CONVERSATIONS]
    assert together == alone
    assert len(set(together)) == len(CONVERSATIONS)  # distinct answers, so the order is checked too
    assert all(isinstance(a, str) and a and a == a.strip() for a in together)
    monkeypatch.setattr(local, "batch_size", 2)  # several generate calls
    assert local.chat(CONVERSATIONS) == together
    assert local.chat([]) == []


def test_transformers_max_new_tokens_bounds_the_answer(local, monkeypatch):
    lengths, generate = [], local.llm.generate

    def spy(**kwargs):
        out = generate(**kwargs)
        lengths.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(local.llm, "generate", spy)
    long = local.complete(CONVERSATIONS, 8, 0.0, None)
    short = local.complete(CONVERSATIONS, 3, 0.0, None)
    assert lengths == [8, 3]
    for a, b in zip(long, short, strict=True):
        assert b.completion_tokens <= 3 and a.text.startswith(b.text)


def test_transformers_sampling_follows_the_seed(llm_dir):
    config = LLMBackendConfig(model=str(llm_dir), max_new_tokens=8, temperature=1.0, seed=1)
    first = TransformersChat(config).chat(CONVERSATIONS)
    assert TransformersChat(config).chat(CONVERSATIONS) == first
    assert TransformersChat(replace(config, seed=2)).chat(CONVERSATIONS) != first


def test_transformers_bad_item_fails_alone(local):
    bad = [{"role": "user", "content": None}]  # the chat template cannot render it
    answers = local.chat([CONVERSATIONS[0], bad, CONVERSATIONS[2]])
    assert isinstance(answers[1], LLMError) and answers[1].reason
    assert [answers[0], answers[2]] == local.chat([CONVERSATIONS[0], CONVERSATIONS[2]])


# 2. the real chat server, as a process on loopback


@pytest.fixture(scope="module")
def chat_server(llm_dir, tmp_path_factory) -> Iterator[str]:
    port, log = free_port(), tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, "-m", "data_recipes.builder.chat_server", "--model", str(llm_dir), "--port", str(port)]
    with open(log, "w") as out:
        process = subprocess.Popen([*command, "--max-batch", "8"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the chat server exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the chat server did not start in 120 s:\n{log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_server_answers_as_the_local_backend(chat_server, local, llm_dir):
    expected = local.chat(CONVERSATIONS) * 4
    rates = {}
    for concurrency in (1, 4):
        config = LLMBackendConfig(
            backend="openai",
            base_url=f"{chat_server}/v1",
            model=str(llm_dir),
            concurrency=concurrency,
            max_new_tokens=8,
        )
        start = time.perf_counter()
        assert make_backend(config).chat(CONVERSATIONS * 4) == expected
        rates[concurrency] = len(expected) / (time.perf_counter() - start)
        health = httpx.get(f"{chat_server}/health").json()
        assert health["largest_batch"] == 1 if concurrency == 1 else health["largest_batch"] > 1  # it batched
    print(f"\nanswers/s through the chat server: concurrency 1 {rates[1]:.1f}, concurrency 4 {rates[4]:.1f}")


class HeldChat:
    """Stands in for the model: every generate call waits until the test lets it go, and is counted."""

    def __init__(self):
        self.go, self.asked = threading.Event(), []

    def complete(self, conversations, max_new_tokens, temperature, seed):
        self.go.wait(30)
        self.asked += [c[-1]["content"] for c in conversations]
        return [Completion(f"echo {c[-1]['content']}", 1, 1, True) for c in conversations]


def test_server_under_load_answers_health_at_once_and_drops_requests_whose_client_left():
    """60 requests wait behind a busy model (more than a thread pool would hold); 20 of their clients give up."""
    chat, port = HeldChat(), free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(chat, "m", max_batch=1), port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    while not server.started:
        time.sleep(0.05)

    def ask(i: int) -> int | None:
        body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
        try:
            return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=1.0 if i % 3 == 0 else 30).status_code
        except httpx.TimeoutException:
            return None  # the client gave up and closed its connection

    try:
        with ThreadPoolExecutor(60) as pool:
            codes = pool.map(ask, range(60))
            time.sleep(2.5)  # every client asked, the impatient ones gave up, the server saw them go
            health = httpx.get(f"{url}/health", timeout=5).json()  # answered while all 60 wait
            assert health["requests"] == 0
            chat.go.set()
            codes = list(codes)
        deadline = time.monotonic() + 10
        while (stats := httpx.get(f"{url}/health").json())["requests"] + stats["dropped"] < 60:
            assert time.monotonic() < deadline, stats
            time.sleep(0.05)
    finally:
        server.should_exit = True
    assert codes.count(200) == 40 and codes.count(None) == 20
    patient = {f"q{i}" for i in range(60) if i % 3}
    # each patient question generated once; of the 20 that left, only one already being generated (if any) was
    assert patient <= set(chat.asked) and len(chat.asked) == len(set(chat.asked)) in (40, 41)
    assert stats["dropped"] == 60 - len(chat.asked) and stats["requests"] == len(chat.asked)


def test_server_speaks_the_protocol(chat_server, llm_dir):
    models = httpx.get(f"{chat_server}/v1/models").json()
    assert [m["id"] for m in models["data"]] == [str(llm_dir)]
    url, model = f"{chat_server}/v1/chat/completions", str(llm_dir)
    request = {"model": model, "messages": CONVERSATIONS[1], "max_completion_tokens": 3, "temperature": 0}
    reply = httpx.post(url, json=request, timeout=30)
    assert reply.status_code == 200
    body = reply.json()
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    usage = body["usage"]
    assert 1 <= usage["completion_tokens"] <= 3 and usage["prompt_tokens"] > 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 3 else "stop")
    parts = {"role": "user", "content": [{"type": "text", "text": "yes no "}, {"type": "text", "text": "maybe"}]}
    as_parts = httpx.post(url, json={**request, "messages": [parts]}, timeout=30).json()
    as_text = httpx.post(url, json={**request, "messages": CONVERSATIONS[2]}, timeout=30).json()
    assert as_parts["choices"][0]["message"] == as_text["choices"][0]["message"]

    unknown = httpx.post(url, json={**request, "model": "other"}, timeout=30)
    assert unknown.status_code == 404 and "not served here" in unknown.json()["error"]["message"]
    invalid = httpx.post(url, json={"model": model, "messages": [{"role": "robot", "content": "hi"}]}, timeout=30)
    assert invalid.status_code == 400 and "messages" in invalid.json()["error"]["message"]
    assert httpx.post(url, json={**request, "stream": True}, timeout=30).status_code == 400


# 3. a failing endpoint


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("fake") / "requests.jsonl"
    log.touch()
    process = subprocess.Popen([sys.executable, str(FAKE_SERVER), str(log)], stdout=subprocess.PIPE, text=True)
    try:
        port = process.stdout.readline().strip()
        assert port.isdigit(), "the fake server did not start"
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        stop(process)


@pytest.fixture
def fast_backoff(monkeypatch) -> float:
    monkeypatch.setattr(endpoint, "BACKOFF_BASE_S", 0.05)
    return 0.05


def fake(fake_server, model: str, **options) -> OpenAIChat:
    config = LLMBackendConfig(backend="openai", base_url=fake_server[0], model=model, **options)
    return OpenAIChat(config)


def logged(fake_server, model: str) -> list[dict]:
    lines = fake_server[1].read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["model"] == model]


def test_5xx_is_retried_with_backoff(fake_server, fast_backoff):
    assert fake(fake_server, "status-500-2-a", max_retries=3).chat([user("hi")]) == ["echo: hi"]
    requests = logged(fake_server, "status-500-2-a")
    assert [r["status"] for r in requests] == [500, 500, 200]
    gaps = [b["t"] - a["t"] for a, b in zip(requests, requests[1:], strict=False)]
    assert gaps[0] >= 0.5 * fast_backoff and gaps[1] >= fast_backoff  # waited, longer each time

    (error,) = fake(fake_server, "status-503-9-b", max_retries=2).chat([user("hi")])
    assert isinstance(error, LLMError) and error.reason == "HTTP 503 after 2 retries"
    assert len(logged(fake_server, "status-503-9-b")) == 3


def test_429_waits_for_retry_after(fake_server, fast_backoff):
    assert fake(fake_server, "status-429-1-c", max_retries=2).chat([user("hi")]) == ["echo: hi"]
    rejected, accepted = logged(fake_server, "status-429-1-c")
    assert (rejected["status"], accepted["status"]) == (429, 200)
    assert accepted["t"] - rejected["t"] >= 0.99  # Retry-After: 1, not the 0.05 s backoff


def test_other_4xx_is_not_retried(fake_server, fast_backoff):
    (error,) = fake(fake_server, "status-400-5-d", max_retries=3).chat([user("hi")])
    assert isinstance(error, LLMError) and error.reason == "HTTP 400: planned 400"
    assert len(logged(fake_server, "status-400-5-d")) == 1


def test_timeout_is_retried_then_reported(fake_server):
    start = time.monotonic()
    (error,) = fake(fake_server, "sleep-5", timeout_s=0.3, max_retries=1).chat([user("hi")])
    assert isinstance(error, LLMError) and error.reason == "timeout after 1 retry"
    assert time.monotonic() - start < 4  # the 5 s answer was not waited for


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("garbage", "malformed response: not JSON"),
        ("empty", "empty answer"),
        ("nochoices", "malformed response: no choices[0].message.content"),
    ],
)
def test_garbage_answers_are_errors(fake_server, model, reason):
    answers = fake(fake_server, model, max_retries=2).chat([user("a"), user("b")])
    assert [a.reason if isinstance(a, LLMError) else a for a in answers] == [reason, reason]
    assert len(logged(fake_server, model)) == 2  # not retried: the same request would get the same answer


def test_connection_refused_fails_every_item_quickly():
    config = LLMBackendConfig(backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    start = time.monotonic()
    answers = OpenAIChat(config).chat([user("a"), user("b"), user("c")])
    assert all(isinstance(a, LLMError) and a.reason == "connection refused after 1 retry" for a in answers)
    assert time.monotonic() - start < 5


def test_failed_items_do_not_fail_the_batch(fake_server, fast_backoff):
    prompts = ["one", "FAIL two", "three", "four", "FAIL five", "six"]
    answers = fake(fake_server, "ok", concurrency=3, max_retries=1).chat([user(p) for p in prompts])
    for prompt, answer in zip(prompts, answers, strict=True):
        if "FAIL" in prompt:
            assert isinstance(answer, LLMError) and answer.reason == "HTTP 500 after 1 retry"
        else:
            assert answer == f"echo: {prompt}"


# 4. the API key stays secret


def test_api_key_never_leaves(fake_server, fast_backoff, monkeypatch, caplog, capsys):
    monkeypatch.setenv("OMNI_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    produced = []
    for model in ("ok", "echo-key", "status-500-9-e", "garbage"):
        config = LLMBackendConfig(
            backend="openai", base_url=fake_server[0], model=model, api_key_env="OMNI_TEST_KEY", max_retries=1
        )
        backend = make_backend(config)
        answers = backend.chat([user("hi"), user("FAIL")])
        produced += [repr(backend), str(backend), repr(config), *map(str, answers), *map(repr, answers)]
        produced += [a.reason for a in answers if isinstance(a, LLMError)]
    down = replace(config, base_url=f"http://127.0.0.1:{free_port()}/v1")
    produced += [repr(make_backend(down)), *(a.reason for a in make_backend(down).chat([user("hi")]))]
    out, err = capsys.readouterr()
    produced += [caplog.text, out, err]

    assert all(r["authorization"] == f"Bearer {SECRET}" for r in logged(fake_server, "echo-key"))  # it was sent
    assert not [text for text in produced if SECRET in text]
    assert any("bad key: Bearer ***" in text for text in produced)  # the echoed key was scrubbed

    monkeypatch.delenv("OMNI_TEST_KEY")
    assert make_backend(replace(config, model="ok")).chat([user("x")]) == ["echo: x"]
    assert logged(fake_server, "ok")[-1]["authorization"] == "Bearer none"  # no key: local servers
