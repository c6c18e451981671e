"""The builder's chat LLM backends: a local transformers model, or any OpenAI-compatible endpoint.

Both answer a list of conversations with one answer per conversation, in order; an item that fails comes
back as an `LLMError` with a short reason for the build report instead of failing the whole step.

The HTTP backend runs its own retry loop (exponential backoff with jitter on connection errors, timeouts,
5xx and 429, Retry-After honoured by every worker) so that it behaves the same against vLLM, SGLang,
llama.cpp, TGI, a hosted API or `data_recipes.builder.chat_server`. Its API key is read from an
environment variable when the backend is made and never appears in a config, repr, reason or log line
written here.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from omni.config import check, check_positive

if TYPE_CHECKING:  # torch and transformers load with the local backend only, not for an endpoint
    from omni.chat import Completion

Conversation = list[dict[str, str]]
BACKOFF_BASE_S = 0.5
"""first retry waits up to this long; each further retry doubles it"""
BACKOFF_MAX_S = 30.0
"""longest wait between retries (a server's Retry-After may ask for more, up to RETRY_AFTER_MAX_S)"""
RETRY_AFTER_MAX_S = 300.0
"""longest Retry-After honoured, so that a bad header cannot stall the build for hours"""
REASON_CHARS = 200
"""a server's error message is cut to this length in a reason"""


@dataclass
class LLMBackendConfig:
    """The chat LLM that rewrites and answers instructions: a local transformers model or an endpoint."""

    backend: Literal["transformers", "openai"] = "transformers"
    """transformers = a local causal LM in this process | openai = any OpenAI-compatible chat endpoint"""
    model: str = ".cache/assets/smollm2-135m-instruct"
    """transformers: local directory or hub name | openai: the model name the endpoint serves"""
    base_url: str | None = None
    """openai: the endpoint, e.g. http://127.0.0.1:8000/v1"""
    api_key_env: str = "OPENAI_API_KEY"
    """environment variable holding the API key (never the key itself); unset = no key (local servers)"""
    batch_size: int = 32
    """transformers: prompts per generate call | openai: prompts handed out per round (progress granularity)"""
    concurrency: int = 8
    """openai: most requests in flight; fewer while the endpoint answers slowly or refuses (see InFlight)"""
    timeout_s: float = 60.0
    """openai: seconds before a request is abandoned (and retried)"""
    max_retries: int = 4
    """openai: retries after a connection error, timeout, 5xx or 429 (other 4xx are not retried)"""
    max_new_tokens: int = 128
    """longest answer in tokens"""
    temperature: float = 0.0
    """0 = greedy; above 0 samples"""
    seed: int = 0
    """sampling seed (temperature above 0)"""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """transformers: weights dtype (float32 keeps greedy answers independent of batching)"""

    def __post_init__(self) -> None:
        check_positive(self, "batch_size", "concurrency", "max_new_tokens")
        check(self.timeout_s > 0, "timeout_s", f"must be above 0, got {self.timeout_s}")
        check(self.max_retries >= 0, "max_retries", f"must be at least 0, got {self.max_retries}")
        check(self.temperature >= 0, "temperature", f"must be at least 0, got {self.temperature}")
        check(self.backend != "openai" or bool(self.base_url), "base_url", "required when backend is openai")
        check(bool(self.api_key_env), "api_key_env", "must name an environment variable")


class LLMError(Exception):
    """One item the LLM could not answer; `reason` is short, for the build report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ChatBackend(Protocol):
    batch_size: int

    def chat(self, conversations: list[Conversation]) -> list[str | LLMError]:
        """One answer per conversation (OpenAI message dicts: role/content), in order. A failed item comes
        back as an LLMError with its reason; it never raises for one bad item."""
        ...


def make_backend(config: LLMBackendConfig) -> ChatBackend:
    return TransformersChat(config) if config.backend == "transformers" else OpenAIChat(config)


def short(err: object) -> str:
    """An exception or a server's message as a one-line reason."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:REASON_CHARS]


def answer_text(text: Any) -> str | LLMError:
    """The stripped answer, or why there is none."""
    if not isinstance(text, str) or not text.strip():
        return LLMError("empty answer")
    return text.strip()


class TransformersChat:
    """A local causal LM answering through `omni.chat` (chat template, left padding, batched generate)."""

    def __init__(self, config: LLMBackendConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if config.model.startswith((".", "/", "~")) and not Path(config.model).expanduser().exists():
            raise FileNotFoundError(f"no model directory {config.model} (the demo's SmolLM2: python -m omni.assets)")
        self.config = config
        self.batch_size = config.batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(config.model)
        dtype = getattr(torch, config.dtype)
        self.llm = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).eval()
        if torch.cuda.is_available():
            self.llm.to("cuda")

    def __repr__(self) -> str:
        return f"TransformersChat(model={self.config.model!r}, dtype={self.config.dtype!r})"

    def chat(self, conversations: list[Conversation]) -> list[str | LLMError]:
        config = self.config
        answers: list[str | LLMError] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            for result in self.complete(chunk, config.max_new_tokens, config.temperature, config.seed):
                answers.append(result if isinstance(result, LLMError) else answer_text(result.text))
        return answers

    def complete(
        self, conversations: list[Conversation], max_new_tokens: int, temperature: float, seed: int | None
    ) -> list[Completion | LLMError]:
        """One generate call; if it fails, each conversation alone, so that one bad item (a conversation
        its chat template rejects, say) costs only its own answer."""
        from omni.chat import chat_completions

        try:
            kwargs = {"temperature": temperature, "seed": seed}
            return list(chat_completions(self.llm, self.tokenizer, conversations, max_new_tokens, **kwargs))
        except Exception as err:
            if len(conversations) == 1:
                return [LLMError(short(err))]
        return [self.complete([c], max_new_tokens, temperature, seed)[0] for c in conversations]


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

    def __init__(self, config: LLMBackendConfig):
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
