"""A client for any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, llama.cpp, TGI, a hosted API, or
`data_recipes.builder.chat_server`): what the data builder writes answers with and what evaluations ask a judge.

It answers a list of conversations with one answer per conversation, in order; an item that fails comes back as an
`LLMError` with a short reason instead of failing the whole list. Its own retry loop (exponential backoff with
jitter on connection errors, timeouts, 5xx and 429, Retry-After honoured by every worker) behaves the same against
every server; the number of requests in flight is learnt from the endpoint (`InFlight`). The API key is read from
an environment variable when the client is made and never appears in a config, repr, reason or log line.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

Conversation = list[dict[str, str]]
BACKOFF_BASE_S = 0.5
"""first retry waits up to this long; each further retry doubles it"""
BACKOFF_MAX_S = 30.0
"""longest wait between retries (a server's Retry-After may ask for more, up to RETRY_AFTER_MAX_S)"""
RETRY_AFTER_MAX_S = 300.0
"""longest Retry-After honoured, so that a bad header cannot stall the build for hours"""
REASON_CHARS = 200
"""a server's error message is cut to this length in a reason"""


def completion(model: str, text: str, stopped: bool = True, prompt_tokens: int = 1, completion_tokens: int = 1) -> dict:
    """A chat-completions response body (non-streaming) as OpenAI's API returns it: what the local chat server and
    the tests' stand-in endpoints answer."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop" if stopped else "length",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class EndpointSettings(Protocol):
    """What the client reads from its caller's config (the builder's `llm`, an evaluation's judge)."""

    model: str
    base_url: str | None
    api_key_env: str
    batch_size: int
    concurrency: int
    timeout_s: float
    max_retries: int
    max_new_tokens: int
    temperature: float
    seed: int


class LLMError(Exception):
    """One item the LLM could not answer; `reason` is short, for the build report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def short(err: object) -> str:
    """An exception or a server's message as a one-line reason."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:REASON_CHARS]


def answer_text(text: Any) -> str | LLMError:
    """The stripped answer, or why there is none."""
    if not isinstance(text, str) or not text.strip():
        return LLMError("empty answer")
    return text.strip()


class InFlight:
    """How many requests may be in flight, learnt from the endpoint as TCP learns a link: from 1, one more per
    quick answer until an answer takes over `slow_s` or fails (timeout, 429, 5xx, connection); then halved, and
    grown back by one per round of quick answers; never above `most`. So the builder asks what the endpoint
    serves within its timeout, instead of queueing requests past it and asking them again while the first
    copies still run."""

    def __init__(self, most: int, slow_s: float):
        self.most, self.slow_s = most, slow_s
        self.limit, self.highest, self.starting = 1.0, 1.0, True
        self.busy = 0
        self._changed = threading.Condition()

    def acquire(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.busy < int(self.limit))
            self.busy += 1

    def release(self, served: bool, seconds: float) -> None:
        with self._changed:
            self.busy -= 1
            if served and seconds <= self.slow_s:
                self.limit = min(self.most, self.limit + (1 if self.starting else 1 / self.limit))
            else:
                self.limit, self.starting = max(1.0, self.limit / 2), False
            self.highest = max(self.highest, self.limit)
            self._changed.notify_all()


class OpenAIChat:
    """Any OpenAI-compatible chat-completions endpoint, up to `concurrency` requests in flight (InFlight)."""

    def __init__(self, config: EndpointSettings):
        from openai import OpenAI

        self.config = config
        self.batch_size = config.batch_size
        self._key = os.environ.get(config.api_key_env) or None
        self._client = OpenAI(
            base_url=config.base_url, api_key=self._key or "none", timeout=config.timeout_s, max_retries=0
        )
        self._not_before = 0.0  # a 429's Retry-After pauses every worker until then (time.monotonic)
        self._lock = threading.Lock()
        self.in_flight = InFlight(config.concurrency, slow_s=config.timeout_s / 4)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait for an endpoint that is still starting (its model list answers), or fail after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._client.models.list()
                return
            except Exception as err:
                if time.monotonic() > deadline:
                    raise ConnectionError(
                        f"{self.config.base_url}: no answer in {timeout_s:.0f} s ({short(err)})"
                    ) from err
                time.sleep(1.0)

    def __repr__(self) -> str:
        return f"OpenAIChat(model={self.config.model!r}, base_url={self.config.base_url!r})"

    def chat(self, conversations: list[Conversation]) -> list[str | LLMError]:
        if not conversations:
            return []
        with ThreadPoolExecutor(min(self.config.concurrency, len(conversations))) as pool:
            return list(pool.map(self.answer, conversations))

    def answer(self, messages: Conversation) -> str | LLMError:
        """One conversation, retried as configured; never raises."""
        retries = self.config.max_retries
        for attempt in range(retries + 1):
            self._wait_for_rate_limit()
            self.in_flight.acquire()
            began, served = time.monotonic(), True
            try:
                answer = self._request(messages)
                return answer if isinstance(answer, LLMError) else self._scrub(answer)
            except Exception as err:
                reason, retry, wait = self._classify(err, attempt)
                served = not retry  # a refused or malformed request says nothing of the endpoint's load
            finally:
                self.in_flight.release(served, time.monotonic() - began)
            if not retry:
                break
            if attempt == retries:
                reason += f" after {retries} {'retry' if retries == 1 else 'retries'}"
                break
            time.sleep(wait)
        return LLMError(self._scrub(reason))

    def _request(self, messages: Conversation) -> str | LLMError:
        config = self.config
        seed = {"seed": config.seed} if config.temperature > 0 else {}
        response = self._client.chat.completions.create(
            model=config.model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=config.max_new_tokens,
            temperature=config.temperature,
            **seed,
        )
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            return LLMError("malformed response: no choices[0].message.content")
        return answer_text(content)

    def _classify(self, err: Exception, attempt: int) -> tuple[str, bool, float]:
        """(reason, whether to retry, seconds to wait first)."""
        import openai

        backoff = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
        if isinstance(err, openai.APITimeoutError):
            return "timeout", True, backoff
        if isinstance(err, openai.APIConnectionError):
            refused = "refused" in str(err.__cause__ or "").lower()
            return ("connection refused" if refused else "connection error"), True, backoff
        if isinstance(err, openai.APIStatusError):
            status = err.status_code
            if status == 429:
                retry_after = self._retry_after(err.response.headers)
                if retry_after is not None:
                    with self._lock:
                        self._not_before = max(self._not_before, time.monotonic() + retry_after)
                return "HTTP 429", True, 0.0 if retry_after is not None else backoff
            if status >= 500:
                return f"HTTP {status}", True, backoff
            body = err.body.get("message", err.body) if isinstance(err.body, dict) else err.body
            return (f"HTTP {status}: {short(body)}" if body else f"HTTP {status}"), False, 0.0
        if isinstance(err, json.JSONDecodeError):
            return "malformed response: not JSON", False, 0.0
        return f"malformed response: {short(err)}", False, 0.0

    @staticmethod
    def _retry_after(headers: Any) -> float | None:
        """Retry-After in seconds (or OpenAI's retry-after-ms), capped; None if absent or not a number."""
        for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
            try:
                return min(RETRY_AFTER_MAX_S, max(0.0, float(headers[name]) * scale))
            except (KeyError, TypeError, ValueError):
                continue
        return None

    def _wait_for_rate_limit(self) -> None:
        delay = self._not_before - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _scrub(self, text: str) -> str:
        """A server may echo what it was sent: the key never leaves in a reason."""
        return text.replace(self._key, "***") if self._key else text
